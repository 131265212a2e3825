"""Routing report (JSON + heatmap PNG), sample formats with images, image gate prompts, CLI verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from moesaic.errors import InputError
from moesaic.moe.config import MergeConfig
from moesaic.moe.data import load_samples
from moesaic.moe.merge import merge


def _images(tmp: Path) -> tuple[Path, Path]:
    red, blue = tmp / "red.png", tmp / "blue.png"
    Image.new("RGB", (32, 32), (220, 20, 20)).save(red)
    Image.new("RGB", (32, 32), (20, 20, 220)).save(blue)
    return red, blue


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_sample_formats(tmp_path) -> None:
    red, _ = _images(tmp_path)
    f = _jsonl(tmp_path / "s.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color?"}]},
                      {"role": "assistant", "content": "red"}], "images": ["red.png"]},
        {"question": "how many?", "answer": "two", "image": str(red)},
        {"messages": [{"role": "user", "content": "hello"}]},
    ])
    a, b, c = load_samples(f)
    assert (a.question, a.answer, a.images) == ("what color?", "red", (str(tmp_path / "red.png"),))
    assert (b.question, b.answer, b.images) == ("how many?", "two", (str(red),))
    assert (c.question, c.answer, c.images) == ("hello", None, ())
    assert len(load_samples(f, limit=2)) == 2
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "x"}])
    with pytest.raises(InputError, match="needs 'messages' or 'question'"):
        load_samples(bad)


@pytest.mark.parametrize("family", ["idefics3", "llava", "qwen3_vl"])
def test_image_gate_prompts_and_route_report(family, tiny_model_dir, tmp_path) -> None:
    from moesaic.moe.report import route_report
    from moesaic.moe.config import RouteReportConfig

    base = tiny_model_dir(family)
    red, blue = _images(tmp_path)
    specs = [{"source_model": str(base), "name": "reds", "positive_prompts": ["what color?"],
              "positive_images": [str(red)]},
             {"source_model": str(base), "name": "blues", "positive_prompts": ["what color?"],
              "positive_images": [str(blue)]}]
    merge(MergeConfig(base_model=str(base), experts=specs, experts_per_token=1, out=str(tmp_path / "moe")))
    data = {"red": _jsonl(tmp_path / "r.jsonl", [{"question": "what color is it?", "image": str(red)}] * 2),
            "blue": _jsonl(tmp_path / "b.jsonl", [{"question": "what color is it?", "image": str(blue)}] * 2)}
    out = tmp_path / "report"
    result = route_report(RouteReportConfig(model=str(tmp_path / "moe"), data={k: str(v) for k, v in data.items()},
                                            out=str(out), count="all"))
    table = json.loads((out / "route_report.json").read_text())
    assert table["experts"] == ["reds", "blues"] == result.experts
    for domain in ("red", "blue"):
        rows = torch.tensor(table["share"][domain])  # (layers, experts)
        assert rows.shape == (2, 2)
        torch.testing.assert_close(rows.sum(dim=1), torch.ones(2))
        assert table["tokens"][domain] > 20  # image tokens are counted with count=all
    png = (out / "route_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "share of tokens per expert" in result.render()


def test_cli_train_gates_and_route_report(tiny_model_dir, tmp_path, capsys) -> None:
    from moesaic.cli import main

    base = tiny_model_dir("llava")
    specs = [{"source_model": str(base), "name": n, "positive_prompts": [p]}
             for n, p in (("cats", "a photo of a cat"), ("counts", "0 1 2 3 4"))]
    merge(MergeConfig(base_model=str(base), experts=specs, experts_per_token=1, gate_mode="random",
                      out=str(tmp_path / "moe")))
    a = _jsonl(tmp_path / "a.jsonl", [{"question": "a cat on a red mat", "answer": "a cat"}] * 3)
    b = _jsonl(tmp_path / "b.jsonl", [{"question": "0 1 2 3 4 5", "answer": "6 7"}] * 3)
    assert main(["train-gates", str(tmp_path / "moe"), "--data", f"[{a}, {b}]", "--steps", "20", "--lr", "0.1",
                 "--out", str(tmp_path / "trained")]) == 0
    assert "trained gates (classify) for 20 steps" in capsys.readouterr().out
    assert main(["route-report", str(tmp_path / "trained"), "--data", f"{{cats: {a}, counts: {b}}}",
                 "--out", str(tmp_path / "rep"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["experts"] == ["cats", "counts"]
    # the trained classifier separates these two sample sets perfectly
    assert result["share"]["cats"][-1][0] > 0.9 and result["share"]["counts"][-1][1] > 0.9
    assert main(["train-gates", str(tmp_path / "moe"), "--data", f"[{a}]"]) == 2
    assert "lists 1 sample files but the model has 2 experts" in capsys.readouterr().err
