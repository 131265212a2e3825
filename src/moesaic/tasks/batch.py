"""``moesaic batch TASK INPUT --out results.jsonl``: run a per-image task over a folder, CSV or JSONL.

One JSON line per image (``id`` plus the task's result, or ``error``). Resumable: ids already in the output
are skipped, a half-written last line from an interrupted run is cut off first, and every line is flushed
and fsynced as it is written. Task options go under ``options`` (``--options.question "what colour?"``).
``--ray`` runs the same task on Ray Data (``pip install 'moesaic[ray]'``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from moesaic.config import CommandConfig
from moesaic.errors import MoesaicError, missing_extra
from moesaic.progress import progress
from moesaic.tasks.base import STARTER, TaskConfig, open_backend, run_task
from moesaic.tasks.registry import TaskName, task_class
from moesaic.tasks.sources import ImageRow, list_images

__all__ = ["BatchConfig", "BatchResult", "batch", "done_ids"]

log = logging.getLogger(__name__)


class BatchConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("task", "input")

    task: TaskName = Field(description="caption | tag | vqa | product")
    input: str = Field(description="a folder of images, a CSV or a JSONL naming images")
    out: str = Field(description="the JSONL file results are appended to")
    model: str = Field(STARTER, description="'starter', a hub id or a local VLM folder")
    backend: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="the task's own options (--options.top_k 3)")
    stop_on_error: bool = Field(False, description="stop at the first failing image instead of recording it")
    ray: bool = Field(False, description="run on Ray Data (needs ray installed)")


class BatchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str
    task: str
    done: int
    skipped: int
    failed: int
    total: int

    def render(self) -> str:
        return f"{self.out}: {self.done} done, {self.skipped} already there, {self.failed} failed (of {self.total})"


def done_ids(out: Path) -> set[str]:
    """Ids already written; a torn last line (no newline) is truncated away first."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with out.open("r+b") as fh:
            fh.truncate(keep)
        data = data[:keep]
        log.warning("cut a half-written last line from %s", out)
    ids = set()
    for line in data.decode("utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _task_config(cfg: BatchConfig, row: ImageRow) -> TaskConfig:
    cls = task_class(cfg.task).config_cls
    data = {**row.extra, **cfg.options} if cfg.task == "vqa" else dict(cfg.options)
    data = {k: v for k, v in data.items() if k in cls.model_fields}
    return cls.validated({**data, "image": row.ref, "model": cfg.model, "backend": cfg.backend},
                         source=f"batch options for {row.id}")


def _one(cfg: BatchConfig, row: ImageRow, backend: Any) -> dict[str, Any]:
    try:
        result = run_task(task_class(cfg.task), _task_config(cfg, row), backend=backend)
        return {"id": row.id, **result.row()}
    except MoesaicError as exc:
        if cfg.stop_on_error:
            raise
        log.warning("%s failed on %s: %s", cfg.task, row.id, exc)
        return {"id": row.id, "error": str(exc)}


def batch(config: BatchConfig) -> BatchResult:
    """Run a task over many images; resumable; one JSON line per image."""
    rows = list_images(config.input)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = done_ids(out)
    todo = [r for r in rows if r.id not in seen]
    for row in todo[:1]:
        _task_config(config, row)  # validate the options before loading any model
    config.save(out.parent, name=out.name + ".config.yaml")
    if config.ray:
        results = _run_ray(config, todo)
    else:
        backend = open_backend(config.model, config.backend, starter_direct=not task_class(config.task).starter_needs_backend)
        results = (_one(config, row, backend) for row in progress(todo, desc=config.task, total=len(todo), unit="img"))
    done = failed = 0
    with out.open("a", encoding="utf-8") as fh:
        for record in results:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            failed += "error" in record
            done += "error" not in record
    return BatchResult(out=str(out), task=config.task, done=done, skipped=len(rows) - len(todo), failed=failed,
                       total=len(rows))


class _RayRunner:
    """A Ray Data actor: loads the backend once, runs the task on each batch of rows."""

    def __init__(self, config_json: str) -> None:
        self.config = BatchConfig.model_validate_json(config_json)
        needs = task_class(self.config.task).starter_needs_backend
        self.backend = open_backend(self.config.model, self.config.backend, starter_direct=not needs)

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        lines = []
        for rid, ref, extra in zip(rows["id"], rows["ref"], rows["extra"]):
            row = ImageRow(id=str(rid), ref=str(ref), extra=json.loads(str(extra)))
            lines.append(json.dumps(_one(self.config, row, self.backend), ensure_ascii=False))
        return {"line": lines}


def _run_ray(config: BatchConfig, rows: list[ImageRow]) -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise missing_extra("ray", "ray") from None
    items = [{"id": r.id, "ref": r.ref, "extra": json.dumps(r.extra)} for r in rows]
    if not items:
        return iter(())
    ds = ray.data.from_items(items).map_batches(
        _RayRunner, fn_constructor_args=(config.model_dump_json(),), batch_size=8, concurrency=1
    )
    return (json.loads(rec["line"]) for rec in ds.iter_rows())
