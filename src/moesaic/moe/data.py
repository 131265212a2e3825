"""Sample files for gate training and routing reports (JSONL, one sample per line).

Two row shapes are accepted:

* ``{"messages": [{"role": "user", "content": [{"type": "image", "path": "a.jpg"}, {"type": "text", "text": "…"}]},
  {"role": "assistant", "content": "…"}], "images": ["a.jpg"]}`` — content may be a plain string; image parts
  may name their file with ``path``/``image``/``url`` (local paths) or take them in order from ``images``;
* ``{"question": "…", "answer": "…", "image": "a.jpg"}`` (``image``/``images`` optional).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moesaic.errors import InputError
from moesaic.inputs.jsonl import iter_jsonl
from moesaic.moe.prompts import encode, image_list, render_prompt

__all__ = ["Sample", "load_samples", "encode_sample", "template_ids"]


@dataclass(frozen=True)
class Sample:
    question: str
    answer: str | None = None
    images: tuple[str, ...] = field(default_factory=tuple)


def _from_messages(row: dict[str, Any], where: str) -> Sample:
    pending = list(row.get("images") or [])
    question, answer, images = [], None, []
    for msg in row["messages"]:
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
        if msg.get("role") == "assistant":
            answer = "\n".join(texts)
            break
        question += texts
        for p in parts:
            if p.get("type") in ("image", "image_url"):
                ref = p.get("path") or p.get("image") or p.get("url")
                if isinstance(ref, dict):
                    ref = ref.get("url")
                if not ref:
                    if not pending:
                        raise InputError(f"{where}: more image parts than images", "list every image in 'images'")
                    ref = pending.pop(0)
                images.append(str(ref))
    return Sample("\n".join(question), answer, tuple(images))


def _row(row: Any, where: str) -> Sample:
    if not isinstance(row, dict):
        raise InputError(f"{where}: a row must be a JSON object", "write one {...} per line")
    if "messages" in row:
        return _from_messages(row, where)
    if "question" in row:
        imgs = row.get("images") or ([row["image"]] if row.get("image") else [])
        return Sample(str(row["question"]), row.get("answer"), tuple(str(i) for i in imgs))
    raise InputError(f"{where}: a row needs 'messages' or 'question'", "see moesaic.moe.data for the formats")


def load_samples(path: str | Path, limit: int | None = None) -> list[Sample]:
    """Read a JSONL sample file; image paths are resolved relative to the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sample file {p} does not exist", "give the path of a JSONL file")
    samples = []
    for n, row in iter_jsonl(p):
        s = _row(row, f"{p}:{n}")
        imgs = tuple(str(i if Path(i).is_absolute() else p.parent / i) for i in s.images)
        samples.append(Sample(s.question, s.answer, imgs))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise InputError(f"{p} holds no samples", "add at least one JSON line")
    return samples


def encode_sample(processor: Any, sample: Sample, with_answer: bool = True) -> dict[str, torch.Tensor]:
    """Model inputs for a sample (question, plus the answer when asked and present)."""
    answer = sample.answer if with_answer else None
    text = render_prompt(processor, sample.question, len(sample.images), answer)
    return encode(processor, text, image_list(list(sample.images)))


def template_ids(processor: Any) -> set[int]:
    """Ids of the chat template's own tokens (an empty exchange) and of special tokens (image, bos…)."""
    tok = getattr(processor, "tokenizer", processor)
    ids = set(encode_sample(processor, Sample(question="", answer=""))["input_ids"].flatten().tolist())
    return ids | set(getattr(tok, "all_special_ids", []) or [])
