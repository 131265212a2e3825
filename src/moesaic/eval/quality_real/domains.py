"""Text domains of the real-decoder quality study (Phase A), modelled on the product's users.

Text-only analogues of the image domains: a garment described in words → its attributes as JSON; bar-chart
values in words → the highest bar; a sign's letters spelled out → what it says; a micrograph described in
words → its grain class. Every answer comes from a closed set whose members start with different letters,
so their first tokens differ under any tokenizer and first-token scoring is exact. Descriptions use
synonyms the answer must normalise (``crimson`` → ``red``, ``sleeveless`` → ``none``), so a base model
that only copies words scores low.

Rows are drawn per split from their own seed; training rows use the ``train`` question wordings, validation
and test rows the ``eval`` paraphrases (never seen in training). Answers cycle, so every split is balanced.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesaic.errors import ConfigError

__all__ = ["TextDomain", "TEXT_DOMAINS", "text_domain", "write_split", "GARMENT_FIELDS", "SPLIT_SEEDS"]

SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}

GARMENT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {  # field -> value -> words that describe it
    "type": {"shirt": ("shirt", "button-up shirt"), "dress": ("dress", "frock"), "jacket": ("jacket", "blazer"),
             "coat": ("coat", "overcoat"), "hoodie": ("hoodie", "hooded sweatshirt")},
    "colour": {"red": ("crimson", "scarlet"), "blue": ("navy", "cobalt"), "green": ("emerald", "olive"),
               "white": ("ivory", "cream"), "yellow": ("mustard", "lemon"), "pink": ("rose", "salmon")},
    "sleeve": {"short": ("short sleeves", "cap sleeves"), "long": ("long sleeves", "full-length sleeves"),
               "none": ("no sleeves", "a sleeveless cut")},
    "pattern": {"plain": ("a solid finish", "no print"), "striped": ("pinstripes", "stripes"),
                "checked": ("a gingham print", "a plaid print"), "dotted": ("polka dots", "a spotted print")},
}
_FRUITS = ("apples", "bananas", "cherries", "dates", "figs", "grapes", "kiwis", "lemons")
_SIGNS = ("STOP", "EXIT", "OPEN", "PUSH", "WAIT", "DANGER", "CAUTION", "BAKERY", "LIBRARY", "HOTEL")
_GRAINS = {"fine": (4, 15), "medium": (30, 50), "coarse": (80, 150)}  # class -> mean grain size, micrometres

Make = Callable[[int, random.Random], tuple[str, str, dict[str, str]]]  # (context, answer, fields)


@dataclass(frozen=True)
class TextDomain:
    """A closed-answer text domain: how a row's context is made, and its question wordings per split."""

    name: str
    answers: tuple[str, ...]  # the closed answer set (for JSON domains: not used, see ``fields``)
    train_questions: tuple[str, ...]
    eval_questions: tuple[str, ...]
    make: Make
    json_fields: bool = False  # answer is a JSON object scored field by field

    def row(self, i: int, rng: random.Random, split: str) -> dict[str, Any]:
        context, answer, fields = self.make(i, rng)
        pool = self.train_questions if split == "train" else self.eval_questions
        question = f"{context}\n{rng.choice(pool)}"
        return {"question": question, "answer": answer, "domain": self.name, "fields": fields}


def _garment(i: int, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    fields = {}
    k = i
    for field, values in GARMENT_FIELDS.items():  # mixed radix over i: every combination appears in turn
        names = list(values)
        fields[field] = names[k % len(names)]
        k //= len(names)
    w = {f: rng.choice(GARMENT_FIELDS[f][v]) for f, v in fields.items()}
    context = rng.choice([
        "Listing: a {colour} {type} with {sleeve} and {pattern}.",
        "Item description: {type}, {colour}, {pattern}, {sleeve}.",
        "The catalogue shows a {type} in {colour}, made with {sleeve} and {pattern}.",
    ]).format(**w)
    return context, json.dumps(fields), fields


def _chart(i: int, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    bars = rng.sample(_FRUITS, rng.choice((3, 4)))
    top = _FRUITS[i % len(_FRUITS)]
    if top not in bars:
        bars[rng.randrange(len(bars))] = top
    peak = rng.randint(60, 99)
    values = {b: (peak if b == top else rng.randint(5, peak - 15)) for b in bars}
    listed = ", ".join(f"{b} {v}" for b, v in values.items())
    context = rng.choice([f"Bar chart of sales: {listed}.", f"Chart values: {listed}.",
                          f"A bar chart shows {listed}."])
    return context, top, {"answer": top}


def _sign(i: int, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    word = _SIGNS[i % len(_SIGNS)]
    sep = rng.choice(("-", " ", ", "))
    spelled = sep.join(c.lower() if rng.random() < 0.5 else c for c in word)
    context = rng.choice([f"A sign, spelled letter by letter: {spelled}.", f"Letters painted on a sign: {spelled}.",
                          f"The board's letters read {spelled}."])
    return context, word, {"answer": word}


def _micrograph(i: int, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    cls = list(_GRAINS)[i % len(_GRAINS)]
    lo, hi = _GRAINS[cls]
    size, pores = rng.randint(lo, hi), rng.choice(("few pores", "some pores", "no pores", "many pores"))
    context = rng.choice([f"Micrograph: mean grain diameter {size} micrometres, {pores}.",
                          f"Under the microscope the grains average {size} um across, with {pores}.",
                          f"Metallography note: grains about {size} micrometres wide; {pores}."])
    return context, cls, {"answer": cls}


TEXT_DOMAINS: dict[str, TextDomain] = {
    "garment": TextDomain(
        "garment", (), ("Give the garment's type, colour, sleeve and pattern as JSON.",
                        "Return the attributes as JSON.", "List type, colour, sleeve and pattern in JSON."),
        ("What are this item's attributes? Answer in JSON.", "Describe the garment as a JSON object.",
         "Extract the product attributes as JSON."), _garment, json_fields=True),
    "chart": TextDomain(
        "chart", _FRUITS, ("Which bar is highest?", "Which category has the largest value?",
                           "Name the tallest bar."),
        ("What is the top bar?", "Which item sold the most?", "Which bar reaches highest?"), _chart),
    "sign": TextDomain(
        "sign", _SIGNS, ("What does the sign say?", "Read the sign.", "What word is on the sign?"),
        ("What is written on the sign?", "Which word does the sign show?", "Tell me the sign's text."), _sign),
    "micrograph": TextDomain(
        "micrograph", tuple(_GRAINS), ("What is the grain class?", "Classify the grain size.",
                                       "Is the structure fine, medium or coarse?"),
        ("Which grain class is this?", "How would you grade the grain size?", "What grain size category fits?"),
        _micrograph),
}


def text_domain(name: str) -> TextDomain:
    if name not in TEXT_DOMAINS:
        raise ConfigError(f"unknown real-study domain {name!r}", f"choose from: {', '.join(TEXT_DOMAINS)}")
    return TEXT_DOMAINS[name]


def write_split(path: Path, name: str, split: str, n: int, seed: int) -> Path:
    """``n`` rows of domain ``name`` for ``split`` as JSONL (skipped when the file exists)."""
    if path.is_file():
        return path
    dom = text_domain(name)
    rng = random.Random(f"{name}:{split}:{seed * 10 + SPLIT_SEEDS[split]}")
    rows = [dom.row(i, rng, split) for i in range(n)]
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    from moesaic.atomic import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path
