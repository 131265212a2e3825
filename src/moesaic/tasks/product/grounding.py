"""Does the description invent attributes? Colour, material and product-type words in the text must appear
among the attribute values; every one that does not is a violation, reported in the result."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from moesaic.tasks.product.schema import ProductAttributes

__all__ = ["Violation", "find_violations", "COLOUR_WORDS", "MATERIAL_WORDS", "TYPE_WORDS"]

COLOUR_WORDS = frozenset(
    "red blue green yellow orange purple pink brown black white grey gray beige navy teal maroon gold golden "
    "silver cream khaki olive turquoise violet magenta cyan tan burgundy ivory lavender coral charcoal crimson "
    "scarlet lime mint indigo mustard".split()
)
MATERIAL_WORDS = frozenset(
    "cotton wool leather silk denim linen polyester suede nylon cashmere velvet satin fleece canvas rubber "
    "lace corduroy".split()
)
TYPE_WORDS = frozenset(
    "dress jeans skirt sneaker sneakers shoe shoes boot boots sandal sandals bag handbag backpack hat cap "
    "coat jacket sweater hoodie scarf shorts trousers pants socks watch sunglasses".split()
)
SYNONYMS = {"gray": "grey", "golden": "gold", "shoes": "shoe", "sneakers": "sneaker", "boots": "boot",
            "sandals": "sandal"}


class Violation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    word: str
    kind: str  # "colour" | "material" | "type"


def _norm(word: str) -> str:
    return SYNONYMS.get(word, word)


def find_violations(text: str, attributes: ProductAttributes) -> list[Violation]:
    """Words of the closed vocabularies used in ``text`` but absent from the attributes."""
    allowed = {_norm(w) for value in attributes.values() for w in re.findall(r"[a-z]+", value.lower())}
    out: list[Violation] = []
    seen: set[str] = set()
    for word in re.findall(r"[a-z]+", text.lower()):
        key = _norm(word)
        kind = ("colour" if word in COLOUR_WORDS else "material" if word in MATERIAL_WORDS
                else "type" if word in TYPE_WORDS else None)
        if kind is None or key in allowed or key in seen:
            continue
        seen.add(key)
        out.append(Violation(word=word, kind=kind))
    return out
