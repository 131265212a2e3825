"""Request bodies → validated models at a bounded cost, counted before anything expensive runs.

``json.loads`` and pydantic hold the GIL for the whole call, so a thread alone does not keep the event loop
free: 600 000 empty messages (19 MB) took seconds to parse and validate, and ``/ping`` waited for it. Here the
cost is bounded *before* parsing and before validating:

1. the JSON values a body can hold are counted on the raw bytes (every value after the first in a container
   needs a ``,``, every container a ``{`` or ``[``, so ``commas + containers + 1`` bounds them) against a cap
   derived from the limits (:meth:`BodyLimits.max_json_values`);
2. after parsing, ``messages`` and their content parts are counted — empty ones included — against
   ``max_messages`` and ``max_content_parts``;
3. only then does pydantic validate.

The route runs all three in a worker thread (:func:`parse_json_body` is synchronous).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from moesaic.errors import InputError

__all__ = ["BodyLimits", "parse_json_body", "json_object", "check_counts", "validated", "validation_error"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class BodyLimits:
    max_messages: int = 256
    max_content_parts: int = 512
    max_prompt_tokens: int = 4096

    @property
    def max_json_values(self) -> int:
        """Values a legitimate body can need: the structure of the messages and parts plus one value per byte
        of prompt text (a text full of commas counts each one), with room for the other fields."""
        return 8 * self.max_messages + 8 * self.max_content_parts + 4 * self.max_prompt_tokens + 256


_SLICE = 1 << 20  # bytes per count call: the GIL is free between calls, so the event loop runs meanwhile


def _values_bound(raw: bytes, cap: int) -> int:
    """``commas + containers + 1`` of ``raw``, counted one slice at a time; stops early once over ``cap``."""
    values = 1
    for start in range(0, len(raw), _SLICE):
        end = start + _SLICE
        values += raw.count(b",", start, end) + raw.count(b"{", start, end) + raw.count(b"[", start, end)
        if values > cap:
            break
    return values


def json_object(raw: bytes, limits: BodyLimits, fix: str = "send a JSON object") -> dict[str, Any]:
    """``raw`` as a JSON object, refused before parsing when it holds more values than any valid request."""
    cap = limits.max_json_values
    values = _values_bound(raw, cap)
    if values > cap:
        raise InputError(
            f"the body holds more than {cap} JSON values (the most a valid request needs)",
            f"send at most {limits.max_messages} messages and {limits.max_content_parts} content parts",
            param="messages")
    try:
        data: Any = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:  # bad JSON/UTF-8, >4300-digit ints, deep nesting
        raise InputError(f"the body is not valid JSON: {str(exc)[:200]}", fix) from None
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object", fix)
    return data


def check_counts(data: dict[str, Any], limits: BodyLimits) -> None:
    """Messages and content parts per request, every one counted (an empty message or part too)."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        return  # pydantic explains a missing or mistyped field
    if len(messages) > limits.max_messages:
        raise InputError(f"{len(messages)} messages given; at most {limits.max_messages} are accepted",
                         "send fewer messages (summarise or drop old turns)", param="messages")
    parts = sum(len(m["content"]) if isinstance(m, dict) and isinstance(m.get("content"), list) else 1
                for m in messages)
    if parts > limits.max_content_parts:
        raise InputError(f"{parts} content parts given; at most {limits.max_content_parts} are accepted",
                         "join text parts and send fewer images", param="messages")


def validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_json_body(raw: bytes, model: type[M], limits: BodyLimits) -> M:
    """Count, parse, count again, validate: see the module docstring."""
    data = json_object(raw, limits)
    check_counts(data, limits)
    return validated(model, data)


def validation_error(exc: ValidationError, prefix: str = "") -> InputError:
    """A pydantic error as a 400 that names the field: the most specific one (deepest location), so that a
    bad part of a content *list* is reported, not the ``str`` alternative of the same union."""
    first = max(exc.errors(), key=lambda e: len(e["loc"]))
    loc = ".".join(_readable_loc(first["loc"])) or "(body)"
    loc = f"{prefix}{loc}" if prefix else loc
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return InputError(f"invalid request: {loc}: {msg}{more}", f"fix the '{loc}' field of the request", param=loc)


def _readable_loc(loc: tuple[int | str, ...]) -> list[str]:
    """pydantic's location without union labels: ``messages.0.content.list[tagged-union[...]].0.image_url.
    image_url.url`` (branch label, then the discriminator tag beside the field) becomes
    ``messages.0.content.0.image_url.url``."""
    out: list[str] = []
    for part in map(str, loc):
        if part != "body" and "[" not in part and not (out and out[-1] == part):
            out.append(part)
    return out
