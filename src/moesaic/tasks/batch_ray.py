"""``moesaic batch --ray``: the same per-image task on Ray Data, for catalogues larger than one machine.

Ray only runs the task. The driver (:func:`moesaic.tasks.batch.batch`) still lists the images, skips the ids
already in the output and appends every line itself, so a Ray run resumes, records failures and writes
exactly like an in-process one, in the same order. Each actor opens the backend once and answers batches of
rows; a task error travels back with its row (pickled) so ``--stop-on-error`` raises the same exception.

Where Ray runs: inside a program that already called ``ray.init`` the run joins that Ray and leaves it up;
with ``RAY_ADDRESS`` set it joins that cluster; otherwise it starts a private Ray on 127.0.0.1 (no dashboard,
usage statistics off, Ray's token authentication, a small object store, quiet logs) and shuts it down
afterwards. On a cluster the image paths must be readable from every node and moesaic installed on each.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from moesaic.errors import MoesaicError, missing_extra

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.tasks.batch import BatchConfig
    from moesaic.tasks.sources import ImageRow

__all__ = ["RayRunner", "require_ray", "ray_session", "run_ray"]

log = logging.getLogger(__name__)

BATCH_ROWS = 8  # rows per actor call
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # rows are paths and JSON lines; Ray's default is 30 % of RAM
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # a private Ray never phones home
# Ray's banner that a new local Ray uses token authentication (it does, and stays so)
INIT_QUIET_LOGGERS = {"ray._private.authentication.authentication_token_setup": logging.ERROR}
# Ray Data's INFO progress lines and its note that its own bars are off (ours show instead)
QUIET_LOGGERS = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}

Pair = tuple[dict[str, Any], MoesaicError | None]


def require_ray() -> ModuleType:
    """``ray`` with Ray Data, or the error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set, for the processes Ray starts; restore afterwards."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def _levels(levels: dict[str, int]) -> Iterator[None]:
    """Set these loggers' levels; restore afterwards."""
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def ray_session(cpus: int) -> Iterator[ModuleType]:
    """A running Ray: the caller's, the ``RAY_ADDRESS`` cluster's, or a private local one (``cpus`` logical
    CPUs) that is shut down on exit. Only what this function started is shut down."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    with _env(LOCAL_ENV if not address else {}):
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                with _levels(INIT_QUIET_LOGGERS):
                    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                             object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError … when it cannot start
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise MoesaicError(f"could not start {where} ({exc})",
                               "check RAY_ADDRESS and `ray status`, or run without --ray") from exc
        try:
            yield ray
        finally:
            ray.shutdown()


@contextmanager
def _data_context(ray: ModuleType) -> Iterator[None]:
    """Rows come back in input order; Ray's own progress bars, banners and INFO logs are off (ours shows)."""
    ctx = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start")
    saved = {name: getattr(ctx, name) for name in names}
    saved_order = ctx.execution_options.preserve_order
    for name in names:
        setattr(ctx, name, False)
    ctx.execution_options.preserve_order = True
    try:
        with _levels(QUIET_LOGGERS):
            yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
        ctx.execution_options.preserve_order = saved_order


def _pickled(exc: MoesaicError | None) -> bytes:
    return pickle.dumps(exc) if exc is not None else b""


class RayRunner:
    """A Ray Data actor: opens the backend once, then runs the task on each batch of rows.

    A batch is columns ``id``, ``ref``, ``extra`` (JSON); the answer is columns ``line`` (the JSON record),
    ``error`` (the pickled :class:`MoesaicError`, or empty) and ``fatal`` (the backend could not be opened)."""

    def __init__(self, config_json: str) -> None:
        from moesaic.tasks.base import open_backend
        from moesaic.tasks.batch import BatchConfig
        from moesaic.tasks.registry import task_class

        self.config = BatchConfig.model_validate_json(config_json)
        self.backend: Any = None
        self.fatal: MoesaicError | None = None
        try:
            needs = task_class(self.config.task).starter_needs_backend
            self.backend = open_backend(self.config.model, self.config.backend, starter_direct=not needs)
        except MoesaicError as exc:  # reported with every row, raised by the driver
            self.fatal = exc

    def __call__(self, rows: dict[str, Any]) -> dict[str, list[Any]]:
        from moesaic.tasks.batch import attempt
        from moesaic.tasks.sources import ImageRow

        lines: list[str] = []
        errors: list[bytes] = []
        for rid, ref, extra in zip(rows["id"], rows["ref"], rows["extra"]):
            row = ImageRow(id=str(rid), ref=str(ref), extra=json.loads(str(extra)))
            if self.fatal is not None:
                record, exc = {"id": row.id, "error": str(self.fatal)}, self.fatal
            else:
                record, exc = attempt(self.config, row, self.backend)
            lines.append(json.dumps(record, ensure_ascii=False))
            errors.append(_pickled(exc))
        return {"line": lines, "error": errors, "fatal": [self.fatal is not None] * len(lines)}


def run_ray(config: "BatchConfig", rows: list["ImageRow"]) -> Iterator[Pair]:
    """``(record, error)`` per row, in order, computed on Ray. Raises at once when ray is missing."""
    ray = require_ray()
    return _stream(ray, config, rows)


def _stream(ray: ModuleType, config: "BatchConfig", rows: list["ImageRow"]) -> Iterator[Pair]:
    if not rows:
        return
    items = [{"id": r.id, "ref": r.ref, "extra": json.dumps(r.extra)} for r in rows]
    with ray_session(cpus=config.ray_actors + 1), _data_context(ray):
        ds = ray.data.from_items(items).map_batches(
            RayRunner, fn_constructor_args=(config.model_dump_json(),), batch_size=BATCH_ROWS,
            compute=ray.data.ActorPoolStrategy(size=config.ray_actors),
        )
        try:
            for rec in ds.iter_rows():
                exc = pickle.loads(rec["error"]) if rec["error"] else None
                if rec["fatal"] and exc is not None:
                    raise exc
                yield json.loads(rec["line"]), exc
        except MoesaicError:
            raise
        except Exception as exc:  # a bug inside a worker arrives wrapped in Ray's own exception types
            raise MoesaicError(f"the Ray run of {config.task} failed ({type(exc).__name__}: {exc})",
                               "see the worker logs under /tmp/ray/session_latest/logs") from exc
