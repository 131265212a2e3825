"""The attribute schema: field -> allowed values, as a JSON Schema (``enum`` per property).

Inferred from training rows (every value seen per field) or read from a file. Answers are rendered
canonically (fields in schema order, ``json.dumps`` with ``", "``/``": "`` separators), so training targets
and constrained decoding produce the same strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from moesaic.errors import InputError

__all__ = ["AttributeSchema", "canonical_json", "infer_schema", "to_json_schema", "load_schema", "validate_attributes"]

AttributeSchema = dict[str, list[str]]  # field -> allowed values (ordered)


def canonical_json(attributes: Mapping[str, str], order: Iterable[str] | None = None) -> str:
    keys = list(order) if order is not None else list(attributes)
    return json.dumps({k: attributes[k] for k in keys if k in attributes}, ensure_ascii=False)


def infer_schema(rows: Iterable[Mapping[str, str]]) -> AttributeSchema:
    """Field -> sorted set of values seen; field order is first appearance."""
    seen: dict[str, set[str]] = {}
    for attrs in rows:
        for key, value in attrs.items():
            seen.setdefault(key, set()).add(str(value))
    return {k: sorted(v) for k, v in seen.items()}


def to_json_schema(schema: AttributeSchema) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: {"type": "string", "enum": list(v)} for k, v in schema.items()},
        "required": list(schema),
        "additionalProperties": False,
    }


def load_schema(path: str | Path) -> AttributeSchema:
    """Read a JSON Schema with string ``enum`` properties (or a plain ``{field: [values]}`` map)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read schema {p}: {exc}", "pass a JSON file with an enum per property") from None
    props = doc.get("properties", doc) if isinstance(doc, dict) else None
    if not isinstance(props, dict) or not props:
        raise InputError(f"schema {p} has no properties", "write {\"properties\": {\"field\": {\"enum\": [...]}}}")
    out: AttributeSchema = {}
    for key, spec in props.items():
        values = spec.get("enum") if isinstance(spec, dict) else spec
        if not isinstance(values, list) or not values:
            raise InputError(f"schema {p}: property {key!r} has no enum values",
                             "list the allowed values of every property under 'enum'")
        out[key] = [str(v) for v in values]
    return out


def validate_attributes(text: str, schema: AttributeSchema) -> tuple[dict[str, str] | None, str | None]:
    """Parse ``text``; return (attributes, None) when it matches ``schema``, else (parsed-or-None, reason)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    obj = {str(k): v for k, v in obj.items()}
    missing = [k for k in schema if k not in obj]
    extra = [k for k in obj if k not in schema]
    bad = [k for k in schema if k in obj and str(obj[k]) not in schema[k]]
    if missing or extra or bad:
        return {k: str(v) for k, v in obj.items()}, f"missing {missing}, unknown {extra}, out-of-schema {bad}"
    return {k: str(obj[k]) for k in schema}, None
