"""Training rows: read JSONL/CSV, normalise every row to chat messages, validate up front.

Accepted row shapes (``image``: one reference; ``images``: a list — in CSV a JSON list or ``a.png|b.png``;
paths relative to the data file or ``image_root``, or URLs):

- ``messages``: OpenAI turns (``content`` a string or parts ``text``/``image``/``image_url``) or
  sharegpt turns (``from``/``value``); ``<image>`` in a text marks where an image goes.
- ``question`` + ``answer``.
- ``attributes``: a dict; the answer is its canonical JSON (see :mod:`moesaic.finetune.schema`),
  the prompt ``question`` or :data:`ATTRIBUTE_PROMPT`.

Every problem is reported with its row number (1-based, header excluded) before any model is loaded.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesaic.errors import InputError
from moesaic.inputs.jsonl import iter_jsonl

__all__ = ["Sample", "DataError", "read_rows", "load_samples", "ATTRIBUTE_PROMPT", "IMAGE_PLACEHOLDER"]

ATTRIBUTE_PROMPT = "List the product attributes as JSON."
IMAGE_PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_MAX_LISTED = 20


class DataError(InputError):
    code = "invalid_training_data"


@dataclass
class Sample:
    """One normalised row: ``messages`` in the transformers chat-template form (parts lists)."""

    row: int
    images: list[str]
    messages: list[dict[str, Any]]
    attributes: dict[str, str] | None = None
    pil: list[Any] = field(default_factory=list, repr=False)  # decoded images, filled by budget.prepare

    @property
    def answer(self) -> str:
        """The last assistant turn's text (what eval compares against)."""
        last = [m for m in self.messages if m["role"] == "assistant"][-1]
        return "".join(p["text"] for p in last["content"] if p["type"] == "text")

    def prompt_messages(self) -> list[dict[str, Any]]:
        """Messages up to (not including) the last assistant turn."""
        idx = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:idx]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` (one object per line) or ``.csv`` (header row) file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist", "check the 'data' path in your config")
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            return [_csv_row(r) for r in csv.DictReader(fh)]
    if p.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"{p.name}: unknown data format {p.suffix!r}", "use a .jsonl or .csv file")
    rows = []
    for n, obj in iter_jsonl(p, DataError):
        if not isinstance(obj, dict):
            raise DataError(f"{p.name} line {n}: expected an object", "write one JSON object per line")
        rows.append(obj)
    return rows


def _csv_row(raw: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: v for k, v in raw.items() if k is not None and v not in (None, "")}
    for key in ("messages", "attributes", "images"):
        if isinstance(row.get(key), str) and row[key].lstrip()[:1] in "[{":
            try:
                row[key] = json.loads(row[key])
            except json.JSONDecodeError:
                pass
    if isinstance(row.get("images"), str):
        row["images"] = [s.strip() for s in row["images"].split("|") if s.strip()]
    return row


def load_samples(path: str | Path, image_root: str | Path | None = None) -> list[Sample]:
    """Read and validate every row; raise one :class:`DataError` listing all bad rows."""
    root = Path(image_root) if image_root else Path(path).parent
    samples, problems = [], []
    for n, row in enumerate(read_rows(path), start=1):
        try:
            samples.append(_sample(n, row, root))
        except ValueError as exc:
            problems.append(f"row {n}: {exc}")
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise DataError(f"{Path(path).name}: {len(problems)} bad row(s): {shown}{more}",
                        "fix or remove the named rows (row numbers count data rows from 1)")
    if not samples:
        raise DataError(f"{Path(path).name} holds no rows", "add training rows")
    return samples


def _images(row: dict[str, Any], root: Path) -> list[str]:
    refs = row.get("images", row.get("image"))
    refs = [] if refs is None else [refs] if isinstance(refs, str) else list(refs)
    out = []
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"image reference {ref!r} is not a string")
        if re.match(r"^(https?|data):", ref) or len(ref) > 512:
            out.append(ref)
            continue
        local = Path(ref) if Path(ref).is_absolute() else root / ref
        if not local.is_file():
            raise ValueError(f"image {ref} not found (looked at {local})")
        out.append(str(local))
    return out


def _sample(n: int, row: dict[str, Any], root: Path) -> Sample:
    images = _images(row, root)
    attributes = None
    if "messages" in row:
        messages = [_turn(t) for t in row["messages"]]
    elif "attributes" in row:
        from moesaic.finetune.schema import canonical_json

        attributes = row["attributes"]
        if not isinstance(attributes, dict) or not attributes:
            raise ValueError("'attributes' must be a non-empty object")
        attributes = {str(k): str(v) for k, v in attributes.items()}
        messages = _qa(row.get("question") or ATTRIBUTE_PROMPT, canonical_json(attributes), len(images))
    elif "question" in row and "answer" in row:
        messages = _qa(str(row["question"]), str(row["answer"]), len(images))
    else:
        raise ValueError("needs 'messages', 'question' + 'answer', or 'attributes'")
    _check_turns(messages, len(images))
    return Sample(row=n, images=images, messages=messages, attributes=attributes)


def _qa(question: str, answer: str, n_images: int) -> list[dict[str, Any]]:
    user = _parts(question)
    if not any(p["type"] == "image" for p in user):
        user = [{"type": "image"}] * n_images + user
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _parts(answer)}]


def _parts(text: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            parts.append({"type": "image"})
        if chunk.strip():
            parts.append({"type": "text", "text": chunk.strip()})
    return parts


def _turn(turn: Any) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise ValueError(f"a message must be an object, got {type(turn).__name__}")
    role = _ROLES.get(str(turn.get("role", turn.get("from", ""))))
    if role is None:
        raise ValueError(f"unknown role {turn.get('role', turn.get('from'))!r} (use system/user/assistant)")
    content = turn.get("content", turn.get("value"))
    if isinstance(content, str):
        return {"role": role, "content": _parts(content)}
    if not isinstance(content, list):
        raise ValueError("message content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.extend(_parts(str(part.get("text", ""))))
        elif kind in ("image", "image_url"):
            parts.append({"type": "image"})
        else:
            raise ValueError(f"unknown content part {part!r}")
    return {"role": role, "content": parts}


def _check_turns(messages: list[dict[str, Any]], n_images: int) -> None:
    placeholders = sum(p["type"] == "image" for m in messages for p in m["content"])
    if placeholders != n_images:
        raise ValueError(f"{placeholders} image placeholder(s) but {n_images} image(s)")
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise ValueError("no assistant turn to learn from")
    for m in assistants:
        if any(p["type"] == "image" for p in m["content"]):
            raise ValueError("images in an assistant turn are not supported")
        if not "".join(p.get("text", "") for p in m["content"]).strip():
            raise ValueError("empty answer (assistant turn has no text)")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last turn must be the assistant's answer")
