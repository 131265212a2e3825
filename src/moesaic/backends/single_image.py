"""Shared by the one-image backends (ViLT, GIT): the question and image a conversation asks about."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar

from moesaic.backends.base import Backend, BackendOptions
from moesaic.errors import InputError
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from transformers import PreTrainedModel, ProcessorMixin

__all__ = ["SingleImageBackend", "question_and_image"]


class SingleImageBackend(Backend):
    """A transformers model class plus its processor, one image per question; subclasses answer."""

    max_images = 1
    model_class: ClassVar[str]  # the transformers class that loads the checkpoint, e.g. "GitForCausalLM"

    def __init__(self, model: "PreTrainedModel", processor: "ProcessorMixin", *, name: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.device = next(model.parameters()).device
        self.forward_calls = 0
        self._lock = threading.Lock()

    @classmethod
    def create(cls, model: str, options: BackendOptions) -> "SingleImageBackend":
        import transformers

        from moesaic.backends.hf_load import load_model, load_processor_or_fail

        processor = load_processor_or_fail(model)
        loaded, _ = load_model(model, getattr(transformers, cls.model_class), options)
        return cls(loaded, processor, name=model)


def question_and_image(prompt: list[Turn], backend: str) -> tuple[str, "Image.Image"]:
    """The last user turn's text and its single image (earlier turns are ignored: these models are one-shot)."""
    users = [t for t in prompt if t.role == "user"]
    if not users:
        raise InputError("the conversation has no user message", "send one user message with an image")
    turn = users[-1]
    images = turn.images
    if len(images) != 1:
        raise InputError(
            f"{backend} answers about exactly one image, the last user message has {len(images)}",
            "attach one image to the last user message",
        )
    return turn.text.strip(), images[0].convert("RGB")
