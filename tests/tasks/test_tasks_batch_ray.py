"""batch --ray: the same task on Ray Data, started locally on 127.0.0.1, writes the same lines as in process,
resumes by the same ids, stops on the same errors, and shuts down only the Ray it started. (Ray missing:
test_tasks_batch.py::test_batch_errors.)"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moesaic.errors import InputError, ModelLoadError
from moesaic.tasks.batch import BatchConfig, batch
from moesaic.tasks.samples import save_products

COLOURS = ("red", "blue", "green", "yellow", "black")


@pytest.fixture()
def shirts(tmp_path: Path) -> Path:
    save_products(tmp_path / "shirts", [("t-shirt", c) for c in COLOURS], size=96)
    return tmp_path / "shirts"


@pytest.fixture()
def quiet_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``ray`` with no cluster address or usage-stats choice inherited from the environment; no Ray left
    running afterwards."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    assert not ray.is_initialized()
    yield ray
    ray.shutdown()


def _rows(path: Path) -> list[dict[str, Any]]:
    """The lines, less the timing field (it differs run to run)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _listing(shirts: Path, tmp_path: Path) -> Path:
    """A JSONL of the five shirts, a broken image in the middle."""
    (tmp_path / "broken.png").write_text("not an image")
    names = [f"shirts/{c}-t-shirt.png" for c in COLOURS]
    names.insert(2, "broken.png")
    listing = tmp_path / "items.jsonl"
    listing.write_text("".join(json.dumps({"image": n, "id": f"row{i}"}) + "\n" for i, n in enumerate(names)))
    return listing


@pytest.mark.slow
def test_ray_starts_locally_and_writes_the_in_process_lines(
    shirts: Path, tmp_path: Path, quiet_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = _listing(shirts, tmp_path)
    common = {"task": "product", "input": str(listing), "options": {"writer": "template", "ocr": False}}
    local = batch(BatchConfig(**common, out=str(tmp_path / "local.jsonl")))
    inits: list[dict[str, Any]] = []
    real_init = quiet_ray.init

    def spy(**kwargs: Any) -> Any:
        inits.append({**kwargs, "usage_stats": os.environ.get("RAY_USAGE_STATS_ENABLED")})
        return real_init(**kwargs)

    monkeypatch.setattr(quiet_ray, "init", spy)
    on_ray = batch(BatchConfig(**common, out=str(tmp_path / "ray" / "ray.jsonl"), ray=True))
    assert len(inits) == 1 and inits[0]["usage_stats"] == "0" and inits[0]["num_cpus"] == 2
    assert inits[0]["_node_ip_address"] == "127.0.0.1" and inits[0]["include_dashboard"] is False
    assert not quiet_ray.is_initialized()  # the Ray it started is shut down …
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ  # … and the environment restored
    counts = (on_ray.done, on_ray.failed, on_ray.skipped, on_ray.total)
    assert counts == (local.done, local.failed, 0, 6) == (5, 1, 0, 6)
    rows = _rows(tmp_path / "ray" / "ray.jsonl")
    assert rows == _rows(tmp_path / "local.jsonl")  # same records, same order
    assert [r["id"] for r in rows] == [f"row{i}" for i in range(6)]
    assert "not a readable image" in rows[2]["error"]
    assert [r["attributes"]["colours"] for r in rows if "error" not in r] == [[c] for c in COLOURS]
    assert (tmp_path / "ray" / "ray.jsonl.config.yaml").read_text().count("ray: true") == 1


@pytest.mark.slow
def test_ray_resumes_and_stops_on_error_in_a_running_ray(
    shirts: Path, tmp_path: Path, quiet_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = BatchConfig(task="tag", input=str(shirts), out=str(tmp_path / "tags.jsonl"), options={"top_k": 2})
    batch(cfg)  # in process: the reference lines
    reference = _rows(tmp_path / "tags.jsonl")
    # an interrupted run: two complete lines and a torn third
    text = (tmp_path / "tags.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "tags.jsonl").write_text("".join(text[:2]) + text[2][:25])
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    quiet_ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                   object_store_memory=100 * 1024**2, log_to_driver=False)
    resumed = batch(cfg.model_copy(update={"ray": True}))
    assert (resumed.done, resumed.skipped, resumed.failed) == (3, 2, 0)
    assert _rows(tmp_path / "tags.jsonl") == reference
    assert batch(cfg.model_copy(update={"ray": True})).done == 0  # nothing left: Ray is not even asked
    # --stop-on-error raises the worker's own InputError; the rows before it are written
    listing = _listing(shirts, tmp_path)
    out = tmp_path / "stop.jsonl"
    with pytest.raises(InputError, match="not a readable image") as info:
        batch(BatchConfig(task="tag", input=str(listing), out=str(out), ray=True, stop_on_error=True))
    assert info.value.hint == "pass a JPEG, PNG or WebP file"
    assert [r["id"] for r in _rows(out)] == ["row0", "row1"]
    # a model the actor cannot open fails the run with the actor's own error, writing nothing
    with pytest.raises(ModelLoadError, match="does not exist"):
        batch(BatchConfig(task="caption", input=str(shirts), out=str(tmp_path / "m.jsonl"), ray=True,
                          model=str(tmp_path / "no-model")))
    assert (tmp_path / "m.jsonl").read_text() == ""
    assert quiet_ray.is_initialized()  # a Ray the caller started stays up

