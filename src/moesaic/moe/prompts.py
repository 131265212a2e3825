"""Turning (prompt text, images) into model inputs through a model's processor.

Gate prompts are rendered with the chat template (so image placeholders expand the way the model
expects) and cut right after the prompt text, so the *last token* is the prompt's own last token — not
an end-of-turn or assistant-header token that every prompt shares (which would make ``hidden`` gates
degenerate). Without a chat template the raw text is used, as mergekit does.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from moesaic.errors import InputError

__all__ = ["render_prompt", "encode", "image_list"]


def image_list(paths: list[str]) -> list[Image.Image]:
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot open image {p}: {exc}", "give the path of a readable image file") from None
    return out


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def render_prompt(processor: Any, text: str, n_images: int, answer: str | None = None) -> str:
    """Chat-templated user turn (images first, then text), cut after ``text`` (or after ``answer``)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    template_owner = processor if getattr(processor, "chat_template", None) else _tokenizer(processor)
    if not getattr(template_owner, "chat_template", None):
        if n_images:
            raise InputError("the model's processor has no chat template", "save the processor with one")
        return text if answer is None else f"{text} {answer}"
    try:
        rendered = template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - text-only tokenizer templates want plain string content
        plain = [{"role": m["role"], "content": m["content"][-1]["text"]} for m in messages]
        rendered = template_owner.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
    tail = answer if answer is not None else text
    cut = rendered.rfind(tail)
    return rendered[: cut + len(tail)] if cut >= 0 and tail else rendered


def encode(processor: Any, text: str, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """Processor outputs (batch of one) for an already rendered prompt."""
    if not images:
        return dict(_tokenizer(processor)(text, return_tensors="pt"))
    try:
        return dict(processor(text=[text], images=[images], return_tensors="pt"))
    except (ValueError, TypeError):  # some processors want a flat image list
        return dict(processor(text=[text], images=images, return_tensors="pt"))
