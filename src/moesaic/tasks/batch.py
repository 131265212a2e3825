"""``moesaic batch TASK INPUT --out results.jsonl``: run a per-image task over a folder, CSV or JSONL.

One JSON line per image (``id`` plus the task's result, or ``error``). Resumable: ids already in the output
are skipped, a half-written last line from an interrupted run is cut off first, and every line is flushed
and fsynced as it is written. Task options go under ``options`` (``--options.question "what colour?"``).
``--ray`` runs the same task on Ray Data (``pip install 'moesaic[ray]'``; see :mod:`moesaic.tasks.batch_ray`):
listing, skipping and writing stay here, so both paths write the same lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from moesaic.config import CommandConfig
from moesaic.errors import MoesaicError
from moesaic.progress import progress
from moesaic.tasks.base import STARTER, TaskConfig, open_backend, run_task
from moesaic.tasks.registry import TaskName, task_class
from moesaic.tasks.sources import ImageRow, list_images

__all__ = ["BatchConfig", "BatchResult", "attempt", "batch", "done_ids"]

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
    ray: bool = Field(False, description="run on Ray Data: a private local Ray, or the cluster at RAY_ADDRESS")
    ray_actors: int = Field(1, ge=1, le=1024, description="with --ray: actors running the task (each loads the model)")


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


def attempt(cfg: BatchConfig, row: ImageRow, backend: Any) -> tuple[dict[str, Any], MoesaicError | None]:
    """The row's record (``id`` plus the result, or ``error``) and the task's error, if any."""
    try:
        result = run_task(task_class(cfg.task), _task_config(cfg, row), backend=backend)
        return {"id": row.id, **result.row()}, None
    except MoesaicError as exc:
        return {"id": row.id, "error": str(exc)}, exc


def _in_process(cfg: BatchConfig, rows: list[ImageRow]) -> Iterator[tuple[dict[str, Any], MoesaicError | None]]:
    backend = open_backend(cfg.model, cfg.backend, starter_direct=not task_class(cfg.task).starter_needs_backend)
    for row in rows:
        yield attempt(cfg, row, backend)


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
        from moesaic.tasks.batch_ray import run_ray  # lazy: batch_ray imports this module

        pairs = run_ray(config, todo)
    else:
        pairs = _in_process(config, todo)
    done = failed = 0
    with out.open("a", encoding="utf-8") as fh, closing(pairs):
        for record, exc in progress(pairs, desc=config.task, total=len(todo), unit="img"):
            if exc is not None:
                if config.stop_on_error:
                    raise exc
                log.warning("%s failed on %s: %s", config.task, record["id"], exc)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            failed += exc is not None
            done += exc is None
    return BatchResult(out=str(out), task=config.task, done=done, skipped=len(rows) - len(todo), failed=failed,
                       total=len(rows))
