"""Which experts a question needs.

Two signals, combined in ``mode="auto"`` (the default):

1. **Keyword rules** (high precision, no model): "read / say / written / text / sign / label" → ``ocr``;
   "colour / color / shade" → ``colors``; "what is this / what kind / identify / is this a" → ``tagger``.
   Several groups may match ("what colour is the text?" → ocr + colors).
2. **MiniLM similarity** of the question to short descriptions of each expert (and of a "generic"
   description request); an expert is chosen when its best cosine similarity is within
   :data:`MARGIN` of the best one and above :data:`MIN_SIMILARITY`.

When keywords decide, the embedder is not loaded (it costs seconds cold). An empty or generic question
("what is in this image?", "describe it") gets :data:`GENERIC` — tagger and colours, plus OCR whose text is
only mentioned when some is found. ``mode="embed"`` uses similarity only, ``mode="keywords"`` rules only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["Route", "Router", "DESCRIPTIONS", "GENERIC", "EXPERTS", "keyword_experts"]

EXPERTS = ("tagger", "ocr", "colors")
GENERIC = ("tagger", "colors", "ocr")
MIN_SIMILARITY = 0.3
MARGIN = 0.05

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "tagger": (
        "what object or animal is this",
        "identify what is shown in the photo",
        "what kind of thing is in the picture",
        "what breed or species is it",
        "what food or drink is this",
    ),
    "ocr": (
        "what does the text say",
        "read the words written in the image",
        "transcribe the writing on the sign or label",
        "what is the title, name or number printed on it",
    ),
    "colors": (
        "what colour is it",
        "which colors are in the image",
        "what is the dominant color or shade",
    ),
    "generic": (
        "what is in this image",
        "describe this picture",
        "tell me about this photo",
        "what do you see",
    ),
}

_RULES: dict[str, re.Pattern[str]] = {
    "ocr": re.compile(
        r"\b(read|reads|say|says|said|text|texts|written|write|writing|word|words|sign|label|labels|title|"
        r"letters?|transcribe|ocr|printed|caption says|spell|spelled|number on)\b"
    ),
    "colors": re.compile(r"\b(colou?rs?|colou?red|shades?|hues?)\b"),
    "tagger": re.compile(
        r"\b(what (is|'s) (this|that|it|shown)|what kind|what sort|what type|which (animal|object|breed)|"
        r"identify|(is|are) (this|that|it|there|these) (an?|any|some)\b|what animal|what object|classify)"
    ),
}
_GENERIC = re.compile(
    r"^\s*(what('s| is) (in|on) (this|the) (image|picture|photo)|describe( (this|the|it))?( (image|picture|photo))?|"
    r"what do you see|caption( this)?( image)?|tell me about (this|the|it)( image| picture| photo)?)\s*[?.!]*\s*$"
)


@dataclass(frozen=True)
class Route:
    """The experts to run, why, and (when similarity was used) each expert's best similarity."""

    experts: tuple[str, ...]
    reason: Literal["empty", "generic", "keywords", "similarity", "fallback"]
    generic: bool = False  # generic questions mention OCR text only when some is found
    scores: dict[str, float] = field(default_factory=dict)


def keyword_experts(question: str) -> tuple[str, ...]:
    """Experts whose keyword rule matches, in :data:`EXPERTS` order."""
    q = question.lower()
    return tuple(name for name in EXPERTS if _RULES[name].search(q))


class Router:
    """``Router().route("what does the sign say?")`` → ``Route(experts=("ocr",), reason="keywords")``."""

    def __init__(self, mode: Literal["auto", "embed", "keywords"] = "auto") -> None:
        self.mode = mode
        self._desc_vecs: dict[str, np.ndarray] | None = None

    def route(self, question: str) -> Route:
        q = (question or "").strip()
        if not q:
            return Route(GENERIC, "empty", generic=True)
        if self.mode != "embed":
            if _GENERIC.match(q.lower()):
                return Route(GENERIC, "generic", generic=True)
            found = keyword_experts(q)
            if found:
                return Route(found, "keywords")
            if self.mode == "keywords":
                return Route(GENERIC, "fallback", generic=True)
        return self._by_similarity(q)

    def similarities(self, question: str) -> dict[str, float]:
        """Best cosine similarity of ``question`` to each description group (experts and "generic")."""
        from moesaic.experts.embed import Embedder

        embedder = Embedder.shared()
        if self._desc_vecs is None:
            self._desc_vecs = {name: embedder.encode(list(texts)) for name, texts in DESCRIPTIONS.items()}
        q = embedder.encode([question])[0]  # (384,)
        return {name: round(float((vecs @ q).max()), 4) for name, vecs in self._desc_vecs.items()}

    def _by_similarity(self, question: str) -> Route:
        scores = self.similarities(question)
        best_name = max(scores, key=scores.__getitem__)
        best = scores[best_name]
        if best < MIN_SIMILARITY or best_name == "generic":
            return Route(GENERIC, "fallback" if best < MIN_SIMILARITY else "generic", generic=True, scores=scores)
        chosen = tuple(n for n in EXPERTS if scores[n] >= max(best - MARGIN, MIN_SIMILARITY))
        return Route(chosen, "similarity", scores=scores)
