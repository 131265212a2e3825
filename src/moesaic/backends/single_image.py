"""Shared by the one-image backends (ViLT, GIT): the question and image a conversation asks about."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moesaic.errors import InputError
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["question_and_image"]


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
