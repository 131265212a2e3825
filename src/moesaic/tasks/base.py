"""The common interface of every task: a frozen config, a :class:`Task` with ``run(image, backend)`` and a
:class:`TaskResult` that renders for humans and serialises for the server and ``moesaic batch``.

A task runs on one of two kinds of answerer:

- the offline **starter experts** (``--model starter``, the default): the task calls the tagger, colour
  namer and OCR directly, so answers are grounded in what those experts saw;
- **any VLM backend** (a hub id or local folder loaded through :func:`moesaic.backends.registry.load_backend`):
  the task prompts it.

``backend is None`` inside :meth:`Task.run` means "use the starter experts directly".
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from moesaic.config import CommandConfig
from moesaic.errors import ImageError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Answer, Backend

__all__ = [
    "TaskConfig",
    "TaskResult",
    "Task",
    "STARTER",
    "is_starter",
    "open_backend",
    "open_image",
    "prompt_backend",
    "run_task",
]

log = logging.getLogger(__name__)

STARTER = "starter"
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs from local files too


class TaskConfig(CommandConfig):
    """Fields shared by every per-image task."""

    positional: ClassVar[tuple[str, ...]] = ("image",)

    image: str = Field(description="image path, http(s) URL, data URL or base64")
    model: str = Field(STARTER, description="'starter' (offline experts), a hub id or a local VLM folder")
    backend: str | None = Field(None, description="force a backend by name (see the registry); default: by model")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="tokens a VLM may generate")


class TaskResult(BaseModel):
    """What every task returns; subclasses add their fields."""

    model_config = ConfigDict(extra="forbid")

    task: str
    image: str
    model: str
    text: str = Field(description="the human-readable answer")
    experts: list[str] = Field(default_factory=list, description="starter experts used (empty for a VLM)")
    seconds: float = 0.0

    def render(self) -> str:
        return self.text

    def row(self) -> dict[str, Any]:
        """A JSON-able row (``moesaic batch`` writes one per image)."""
        return self.model_dump(mode="json")


class Task(ABC):
    """One task: ``run(image, backend)``. Subclasses set ``name`` and ``config_cls``."""

    name: ClassVar[str]
    config_cls: ClassVar[type[TaskConfig]]
    #: whether the starter path needs the StarterBackend (else ``backend`` is ``None`` on starter)
    starter_needs_backend: ClassVar[bool] = False

    def __init__(self, config: TaskConfig) -> None:
        self.config = config

    @abstractmethod
    def run(self, image: "Image.Image", backend: "Backend | None") -> TaskResult:
        """Answer for one decoded image."""


def is_starter(backend: "Backend | None") -> bool:
    """True for the starter experts (no backend, or the registry's StarterBackend)."""
    if backend is None:
        return True
    return type(backend).__name__ == "StarterBackend"


def open_backend(model: str, backend: str | None = None, *, starter_direct: bool = True) -> "Backend | None":
    """Load the backend for ``model``; ``None`` for the starter experts when the task calls them directly."""
    if model == STARTER and backend in (None, STARTER) and starter_direct:
        return None
    from moesaic.backends.registry import load_backend

    return load_backend(model, backend=backend)


def open_image(ref: "str | Path | Image.Image") -> "Image.Image":
    """A PIL image (RGB) from a local path (common photo formats only), or any reference
    :func:`moesaic.inputs.images.load_image` takes (URLs to public hosts, data URLs, base64)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from moesaic.inputs.policy import DEFAULT_FORMATS, ImagePolicy

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    text = str(ref)
    path = Path(text).expanduser()
    looks_local = not text.startswith(("http://", "https://", "data:")) and len(text) < 4096
    if looks_local and path.exists():
        if not path.is_file():
            raise ImageError(f"{path} is not a file", "pass the path of an image file")
        try:
            Image.init()
            formats = [f for f in DEFAULT_FORMATS if f in Image.OPEN]  # no EPS/PSD decoders for local files
            with Image.open(path, formats=formats) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ImageError(f"{path} has {img.width}x{img.height} pixels", "resize it below 64 megapixels")
                return ImageOps.exif_transpose(img).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(f"{path} is not a readable image ({exc})", "pass a JPEG, PNG or WebP file") from None
    if looks_local and ("/" in text or "." in text[-5:]) and not _maybe_base64(text):
        raise ImageError(f"image {text!r} does not exist", "check the path")
    from moesaic.inputs.images import load_image

    return load_image(text, ImagePolicy.for_cli()).convert("RGB")


def _maybe_base64(text: str) -> bool:
    return len(text) > 64 and all(c.isalnum() or c in "+/=\n" for c in text)


def prompt_backend(backend: "Backend", images: list["Image.Image"], prompt: str, max_new_tokens: int) -> "Answer":
    """One user turn (images first, then the prompt), greedy decoding."""
    from moesaic.backends.base import GenerationParams
    from moesaic.inputs.messages import Turn

    turn = Turn(role="user", parts=(*images, prompt))
    return backend.generate([turn], GenerationParams(max_new_tokens=max_new_tokens))


def run_task(task_cls: type[Task], config: TaskConfig, backend: "Backend | None" = None) -> TaskResult:
    """Open the backend (unless given) and the image, run the task, time it."""
    if not isinstance(config, task_cls.config_cls):
        raise InputError(f"{task_cls.name} needs a {task_cls.config_cls.__name__}", "build the task's own config")
    task = task_cls(config)
    if backend is None:
        backend = open_backend(config.model, config.backend, starter_direct=not task_cls.starter_needs_backend)
    image = open_image(config.image)
    start = time.perf_counter()
    result = task.run(image, backend)
    result.seconds = round(time.perf_counter() - start, 4)
    log.info("%s on %s took %.2fs", task_cls.name, config.image, result.seconds)
    return result
