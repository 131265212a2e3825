"""Product attributes: the JSON schema stage 1 must produce, and parsing + repair of a model's JSON.

A VLM's JSON is parsed leniently (code fences, prose around the object, single quotes, trailing commas,
``color`` for ``colours``, a string for a list) and then validated strictly; what cannot be repaired raises
:class:`SchemaMismatchError` naming the fields that were wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moesaic.errors import InputError

__all__ = ["Category", "ProductAttributes", "SchemaMismatchError", "parse_attributes", "ATTRIBUTE_PROMPT"]

Category = Literal["top", "bottom", "dress", "outerwear", "footwear", "bag", "accessory", "other"]
CATEGORIES: tuple[str, ...] = ("top", "bottom", "dress", "outerwear", "footwear", "bag", "accessory", "other")

ATTRIBUTE_PROMPT = (
    "Look at the product in the image and answer with JSON only, exactly these keys:\n"
    '{"category": one of ' + ", ".join(f'"{c}"' for c in CATEGORIES) + ",\n"
    ' "item_type": a short noun such as "t-shirt" or "sneaker",\n'
    ' "colours": a list of colour names, main colour first,\n'
    ' "material": a material name or null,\n'
    ' "visible_text": text printed on the product or null}'
)


class SchemaMismatchError(InputError):
    code = "schema_mismatch"


class ProductAttributes(BaseModel):
    """Stage 1 output: what the product is, grounded in the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Category
    item_type: str = Field(min_length=1, max_length=60)
    colours: list[str] = Field(min_length=1, max_length=6, description="colour names, main colour first")
    material: str | None = None
    visible_text: str | None = None
    source: Literal["experts", "vlm"] = "experts"

    @field_validator("colours")
    @classmethod
    def _clean_colours(cls, value: list[str]) -> list[str]:
        out = []
        for name in value:
            name = name.strip().lower()
            if name and name not in out:
                out.append(name)
        if not out:
            raise ValueError("at least one colour name is needed")
        return out

    @field_validator("item_type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    def values(self) -> list[str]:
        """Every attribute value as text (what the writer may mention)."""
        vals = [self.category, self.item_type, *self.colours]
        return vals + [v for v in (self.material, self.visible_text) if v]


_ALIASES = {"color": "colours", "colors": "colours", "colour": "colours", "type": "item_type",
            "item": "item_type", "product_type": "item_type", "text": "visible_text"}


def _extract_object(text: str) -> str:
    text = re.sub(r"```(?:json)?", "", text)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise SchemaMismatchError(
            f"the model's answer holds no JSON object: {text[:120]!r}",
            "use a model that follows JSON instructions, or --model starter",
        )
    return text[start : end + 1]


def _loads_lenient(blob: str) -> Any:
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", blob)  # trailing commas
    fixed = re.sub(r"'([^'\n]*)'", r'"\1"', fixed)  # single quotes
    fixed = re.sub(r"\bNone\b|\bnull\b", "null", fixed)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError as exc:
        raise SchemaMismatchError(
            f"the model's JSON could not be repaired ({exc.msg} at char {exc.pos})",
            "use a model that follows JSON instructions, or --model starter",
        ) from None


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = _ALIASES.get(str(key).strip().lower(), str(key).strip().lower())
        if key not in ProductAttributes.model_fields or key == "source":
            continue  # extra keys a model adds are dropped, not invented into the schema
        out[key] = value
    colours = out.get("colours")
    if isinstance(colours, str):
        out["colours"] = [c for c in re.split(r"[,/&]| and ", colours) if c.strip()]
    category = out.get("category")
    if isinstance(category, str):
        out["category"] = category.strip().lower()
    for key in ("material", "visible_text"):
        if isinstance(out.get(key), str) and out[key].strip().lower() in ("", "none", "null", "n/a", "unknown"):
            out[key] = None
    return out


def parse_attributes(text: str) -> ProductAttributes:
    """A model's answer → validated attributes (repairing what can safely be repaired)."""
    data = _loads_lenient(_extract_object(text))
    if not isinstance(data, dict):
        raise SchemaMismatchError("the model's JSON is not an object", "answer with one JSON object")
    try:
        return ProductAttributes.model_validate({**_normalise(data), "source": "vlm"})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise SchemaMismatchError(
            f"the attributes do not match the schema: {problems}",
            "the keys must be category, item_type, colours, material, visible_text (see ATTRIBUTE_PROMPT)",
        ) from None
