"""Does an answer state the experts' facts, and does it invent any?

Facts (per image): the best tag (label), each reported colour name, each clearly read OCR line. A fact counts as stated
when it appears in the answer (case-insensitive, whitespace-normalised). Invented facts are things the
answer names that the experts did not find: an ImageNet class name that is not among the image's tags, a
palette colour that was not reported, or a number/percentage that appears in no finding. Anything also
present in the question is not counted as invented. This is a strict, mechanical check; it cannot see a
paraphrase ("coffee" for "espresso" is neither stated nor invented).
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import BaseModel, ConfigDict

from moesaic.experts.colors import PALETTE
from moesaic.experts.findings import ImageFindings
from moesaic.experts.writer import clear_text, pct

__all__ = ["FactCheck", "check_answer", "facts_of"]


class FactCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    facts: list[str]
    stated: list[str]
    invented: list[str]

    @property
    def recall(self) -> float:
        return len(self.stated) / len(self.facts) if self.facts else 1.0


def _norm(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9%<]+", " ", text.lower()).strip() + " "


@lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    from moesaic.experts.tagger import imagenet_names

    return tuple(sorted({n.lower() for n in imagenet_names()}))


def facts_of(images: list[ImageFindings]) -> list[str]:
    facts: list[str] = []
    for f in images:
        if f.tags:
            facts.append(f.tags[0].label)
        facts.extend(c.name for c in f.colors or [])
        facts.extend([f.backdrop] if f.backdrop and f.colors is not None else [])
        facts.extend(t.text for t in f.text or [] if clear_text(t))
    return facts


def _allowed(images: list[ImageFindings], question: str) -> tuple[set[str], set[str], str]:
    colours = {c.name for f in images for c in f.colors or []} | {f.backdrop for f in images if f.backdrop}
    labels = {t.label.lower() for f in images for t in f.tags or []} | colours  # "orange" is also a class
    numbers = [pct(t.score) for f in images for t in f.tags or []]
    numbers += [pct(c.share) for f in images for c in f.colors or []]
    source = _norm(" ".join(numbers + [t.text for f in images for t in f.text or []] + [question]))
    return labels, colours, source


def check_answer(answer: str, images: list[ImageFindings], question: str = "") -> FactCheck:
    """Which facts ``answer`` states and which things it names that no expert found."""
    text, q = _norm(answer), _norm(question)
    facts = facts_of(images)
    stated = [fact for fact in facts if _norm(fact) in text]
    labels, colours, source = _allowed(images, question)
    invented: list[str] = []
    for label in _imagenet_labels():
        phrase = _norm(label)
        if phrase not in text or phrase in q or phrase in source:
            continue
        if not any(phrase in _norm(ok) for ok in labels):
            invented.append(label)
    for name in PALETTE:
        if _norm(name) in text and name not in colours and _norm(name) not in q:
            if not any(_norm(name) in _norm(other) for other in colours):
                invented.append(name)
    for number in set(re.findall(r"\d+%?", text)):
        if f" {number} " not in source and not any(number in _norm(t) for t in facts):
            invented.append(number)
    return FactCheck(facts=facts, stated=stated, invented=sorted(set(invented)))
