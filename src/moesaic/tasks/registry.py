"""Per-image tasks by name (``moesaic batch TASK …``). Targets are strings so nothing loads until used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal

from moesaic.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.tasks.base import Task

__all__ = ["TASKS", "TaskName", "task_class"]

TaskName = Literal["caption", "tag", "vqa", "product"]
TASKS: dict[str, str] = {
    "caption": "moesaic.tasks.caption:CaptionTask",
    "tag": "moesaic.tasks.tag:TagTask",
    "vqa": "moesaic.tasks.vqa:VQATask",
    "product": "moesaic.tasks.product.command:ProductTask",
}


def task_class(name: str) -> "type[Task]":
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}", f"choose one of: {', '.join(TASKS)}", param="task")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
