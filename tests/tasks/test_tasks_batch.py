"""batch: any per-image task over a folder/CSV/JSONL, resumable; and the task verbs through the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from moesaic.cli import main
from moesaic.errors import ConfigError, InputError, MissingDependencyError
from moesaic.tasks.batch import BatchConfig, batch, done_ids
from moesaic.tasks.samples import save_products


@pytest.fixture()
def shirts(tmp_path: Path) -> Path:
    save_products(tmp_path / "shirts", [("t-shirt", c) for c in ("red", "blue", "green", "yellow")], size=128)
    return tmp_path / "shirts"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_tags_a_folder_and_resumes(shirts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "tags.jsonl"
    cfg = BatchConfig(task="tag", input=str(shirts), out=str(out), options={"top_k": 2})
    first = batch(cfg)
    assert (first.done, first.skipped, first.failed, first.total) == (4, 0, 0, 4)
    rows = _lines(out)
    assert [r["tags"][0]["label"] for r in rows] == ["jersey"] * 4 and all(len(r["tags"]) == 2 for r in rows)
    assert {Path(r["id"]).name for r in rows} == {f"{c}-t-shirt.png" for c in ("red", "blue", "green", "yellow")}
    # an interrupted run: two complete lines and a torn third
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:2]) + text[2][:25])
    assert len(done_ids(out)) == 2 and out.read_text().endswith("\n")
    resumed = batch(cfg)
    assert (resumed.done, resumed.skipped) == (2, 2)
    assert sorted(r["id"] for r in _lines(out)) == sorted(r["id"] for r in rows)
    assert batch(cfg).done == 0
    assert (out.parent / "tags.jsonl.config.yaml").is_file()


def test_batch_product_over_jsonl_records_failures(shirts: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_text("not an image")
    listing = tmp_path / "items.jsonl"
    listing.write_text(json.dumps({"image": "shirts/red-t-shirt.png"}) + "\n" + json.dumps({"path": "broken.png"}) + "\n")
    out = tmp_path / "p.jsonl"
    result = batch(BatchConfig(task="product", input=str(listing), out=str(out),
                               options={"writer": "template", "ocr": False}))
    assert (result.done, result.failed) == (1, 1)
    good, bad = _lines(out)
    assert good["attributes"]["colours"] == ["red"] and good["description"] == "A red t-shirt."
    assert "not a readable image" in bad["error"]
    with pytest.raises(InputError, match="not a readable image"):
        batch(BatchConfig(task="product", input=str(listing), out=str(tmp_path / "q.jsonl"),
                          options={"writer": "template", "ocr": False}, stop_on_error=True))


def test_batch_errors(shirts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: import ray raises ImportError
    with pytest.raises(MissingDependencyError, match=r"moesaic\[ray\]"):
        batch(BatchConfig(task="tag", input=str(shirts), out=str(tmp_path / "r.jsonl"), ray=True))
    with pytest.raises(ConfigError, match="top_k"):
        batch(BatchConfig(task="tag", input=str(shirts), out=str(tmp_path / "r.jsonl"), options={"top_k": 0}))
    with pytest.raises(ConfigError, match="task"):
        BatchConfig.validated({"task": "dance", "input": "x", "out": "y"})
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("name\nfoo\n")
    with pytest.raises(InputError, match="no image column"):
        batch(BatchConfig(task="tag", input=str(bad_csv), out=str(tmp_path / "r.jsonl")))


def test_cli_verbs(shirts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    red = str(shirts / "red-t-shirt.png")
    assert main(["tag", red, "--top-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tags"][0]["label"] == "jersey"
    assert main(["describe-product", red, "--writer", "template", "--no-ocr"]) == 0
    assert capsys.readouterr().out.startswith("A red t-shirt.")
    db = str(tmp_path / "i.db")
    assert main(["index", str(shirts), "--db", db, "--no-ocr"]) == 0
    assert "4 added" in capsys.readouterr().out
    assert main(["search", "blue t-shirt", "--db", db, "-k", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 1 and Path(hits[0]["ref"]).name == "blue-t-shirt.png"
    assert main(["search", "shirt", "--db", db, "--where", "colour=green", "--json"]) == 0
    assert [Path(h["ref"]).name for h in json.loads(capsys.readouterr().out)["hits"]] == ["green-t-shirt.png"]
    out = tmp_path / "b.jsonl"
    assert main(["batch", "tag", str(shirts), "--out", str(out), "--options.top_k", "1"]) == 0
    assert [len(r["tags"]) for r in _lines(out)] == [1, 1, 1, 1] and "4 done" in capsys.readouterr().out
    assert main(["search", "red", "--db", str(tmp_path / "none.db")]) == 2
    assert "no index" in capsys.readouterr().err
