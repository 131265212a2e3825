"""What the starter experts see in one image: tags, dominant colours and text, gathered in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Findings", "look", "article", "join_words"]

MIN_OCR_SCORE = 0.7  # lone low-confidence glyphs (a "0" in fur) are noise, not text


@dataclass(frozen=True)
class Findings:
    tags: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), best first
    colours: list[tuple[str, float]] = field(default_factory=list)  # (name, share of pixels), largest first
    text: list[str] = field(default_factory=list)  # OCR lines in reading order

    @property
    def experts(self) -> list[str]:
        used = []
        if self.tags:
            used.append("tagger")
        if self.colours:
            used.append("colors")
        if self.text:
            used.append("ocr")
        return used


def look(image: "Image.Image", *, top_k: int = 5, colours: int = 3, ocr: bool = True) -> Findings:
    """Run the tagger, the colour namer and (optionally) OCR on ``image``."""
    from moesaic.experts.colors import dominant_colors
    from moesaic.experts.tagger import Tagger

    tags = [(t.label, float(t.score)) for t in Tagger.shared().tag(image, top_k=top_k)]
    named = [(c.name, float(c.share)) for c in dominant_colors(image, k=colours)]
    lines: list[str] = []
    if ocr:
        from moesaic.experts.ocr import OCR

        lines = [line.text.strip() for line in OCR.shared().read(image)
                 if line.score >= MIN_OCR_SCORE and len(line.text.strip()) >= 2]
    return Findings(tags=tags, colours=named, text=lines)


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def join_words(words: list[str], conj: str = "and") -> str:
    """["a"] → "a"; ["a", "b"] → "a and b"; ["a", "b", "c"] → "a, b and c"."""
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {conj} " + words[-1]
