"""``examples/eval.yaml`` runs offline on the starter experts: the colour rows pass the relaxed metric, the
report names the metric that ranked each dataset, and the committed data is what the script writes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import yaml

from moesaic.cli import main
from moesaic.eval import EvalResult

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "eval.yaml"
DATA = ROOT / "examples" / "eval_data"


def _rows(folder: Path) -> dict[str, list[dict[str, object]]]:
    out = {}
    for path in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out[path.name] = [{**r, "image": Path(str(r["image"])).name} for r in rows]  # folder-independent
    return out


def test_readme_and_docs_give_the_example_command() -> None:
    for doc in ("README.md", "docs/eval.md"):
        assert "moesaic eval examples/eval.yaml" in (ROOT / doc).read_text(), doc


def test_committed_data_is_what_the_script_writes(tmp_path: Path) -> None:
    script = runpy.run_path(str(ROOT / "examples" / "make_eval_data.py"))
    written = script["write_eval_data"](tmp_path)
    assert sorted(written) == ["charts", "colours", "labels", "tags"]
    assert _rows(tmp_path) == _rows(DATA)
    for rows in _rows(DATA).values():  # every image the JSONL names exists
        assert all((DATA / "images" / str(r["image"])).is_file() or r["image"] == "coffee.jpg" for r in rows)
    from PIL import Image, ImageChops

    for name in ("red-t-shirt.png", "label-sale.png"):
        a, b = Image.open(tmp_path / "images" / name), Image.open(DATA / "images" / name)
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


@pytest.mark.slow
def test_example_runs_offline_and_names_its_ranking_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository root, as in the README
    out = tmp_path / "out"
    assert main(["eval", str(EXAMPLE), "--out", str(out), "--json"]) == 0
    result = EvalResult.model_validate_json(capsys.readouterr().out)
    starter = result.model("starter")
    by_name = {d.dataset: d for d in starter.datasets}
    colours = by_name["colours"]
    assert colours.samples == 5 and colours.primary_metric == "contains_match" and colours.primary > 0.8
    assert colours.strict_metric == "normalized_match" and colours.strict is not None
    assert by_name["charts"].primary_metric == "relaxed_numeric" and by_name["charts"].rows == "numbers"
    assert result.ranking[0] == "colours: ranked by contains_match (default for short answers); " \
                                "strict normalized_match beside it"
    md = (out / "results.md").read_text()
    assert "- colours: ranked by contains_match" in md and "- charts: ranked by relaxed_numeric" in md
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert yaml.safe_load((out / "moesaic_config.yaml").read_text())["models"][0]["model"] == "starter"
