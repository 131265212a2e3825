"""Synthetic image-question domains for the merged-model quality study, generated on the fly.

Each domain is separable from the others by BOTH its question wording (its own vocabulary) and its
images (its own background colour and drawing style), so a router can tell them apart from either.
Answers are single words from a small closed set, so accuracy is the exact match of a greedy answer.

Domains: ``colour`` (which colour is the big square), ``shape`` (square / circle / triangle in black on
grey), ``position`` (where the white dot sits on black), ``count`` (how many blue dots on yellow).

:func:`write_captions` writes the study's domain-neutral pre-training set: images of every domain's style
with one shared question ("Describe the image.") and a short caption, the stand-in for the generic
image-text pre-training a real base model has had before anyone fine-tunes experts from it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moesaic.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Domain", "DOMAINS", "CAPTION_QUESTION", "domain", "write_domain", "write_captions"]

CAPTION_QUESTION = "Describe the image."

Draw = Callable[[str, random.Random, int], "Image.Image"]


@dataclass(frozen=True)
class Domain:
    """A closed-answer visual question domain: its questions, answers and image drawer."""

    name: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    draw: Draw
    caption: str  # pre-training caption, ``{answer}`` filled in

    def sample(self, i: int, rng: random.Random, size: int) -> tuple["Image.Image", str, str]:
        """(image, question, answer) number ``i``: answers cycle so every split is balanced."""
        answer = self.answers[i % len(self.answers)]
        return self.draw(answer, rng, size), rng.choice(self.questions), answer


def _canvas(size: int, background: str) -> tuple["Image.Image", "ImageDraw.ImageDraw"]:  # noqa: F821
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), background)
    return img, ImageDraw.Draw(img)


def _colour(answer: str, rng: random.Random, size: int) -> "Image.Image":
    img, draw = _canvas(size, "white")
    side = size * 5 // 8
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    draw.rectangle([x, y, x + side, y + side], fill=answer)
    return img


def _shape(answer: str, rng: random.Random, size: int) -> "Image.Image":
    img, draw = _canvas(size, (170, 170, 170))
    side = size // 2 + rng.randint(0, size // 8)
    x, y = rng.randint(1, size - side - 1), rng.randint(1, size - side - 1)
    if answer == "square":
        draw.rectangle([x, y, x + side, y + side], fill="black")
    elif answer == "circle":
        draw.ellipse([x, y, x + side, y + side], fill="black")
    else:
        draw.polygon([(x + side // 2, y), (x, y + side), (x + side, y + side)], fill="black")
    return img


def _position(answer: str, rng: random.Random, size: int) -> "Image.Image":
    img, draw = _canvas(size, "black")
    r = size // 8
    jitter = rng.randint(-size // 10, size // 10)
    centre = {"left": (r + 1, size // 2 + jitter), "right": (size - r - 2, size // 2 + jitter),
              "top": (size // 2 + jitter, r + 1), "bottom": (size // 2 + jitter, size - r - 2)}[answer]
    cx, cy = centre
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="white")
    return img


_COUNT = {"one": 1, "two": 2, "three": 3}


def _count(answer: str, rng: random.Random, size: int) -> "Image.Image":
    img, draw = _canvas(size, (250, 220, 40))
    cell = size // 2
    r = size // 8
    cells = rng.sample([(0, 0), (0, 1), (1, 0), (1, 1)], _COUNT[answer])  # one dot per quadrant
    for row, col in cells:
        cx = col * cell + cell // 2 + rng.randint(-1, 1)
        cy = row * cell + cell // 2 + rng.randint(-1, 1)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="blue")
    return img


DOMAINS: dict[str, Domain] = {
    "colour": Domain("colour", ("What colour is the square?", "Which colour is the square?",
                                "Name the colour of the square."), ("red", "green", "blue", "yellow"), _colour,
                      "a {answer} square on white"),
    "shape": Domain("shape", ("Which shape is drawn?", "What shape do you see?", "Name the drawn shape."),
                    ("square", "circle", "triangle"), _shape,
                    "a black {answer} on grey"),
    "position": Domain("position", ("Where is the dot placed?", "On which side is the dot placed?",
                                    "Where does the dot sit?"), ("left", "right", "top", "bottom"),
                       _position, "a white dot at the {answer} on black"),
    "count": Domain("count", ("How many blue dots are there?", "Count the blue dots.",
                              "How many dots can you count?"), ("one", "two", "three"), _count,
                    "blue dots on yellow: {answer}"),
}


def domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ConfigError(f"unknown quality-study domain {name!r}", f"choose from: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def _write_rows(folder: Path, rows: list[dict[str, str]], rng: random.Random) -> Path:
    rng.shuffle(rows)
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_domain(folder: Path, name: str, n: int, seed: int, size: int = 32) -> Path:
    """``n`` rows of domain ``name`` as ``folder/data.jsonl`` (image, question, answer) with PNGs beside it."""
    dom = domain(name)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{name}:{seed}")
    rows = []
    for i in range(n):
        img, question, answer = dom.sample(i, rng, size)
        file = f"{name}{i:04d}.png"
        img.save(folder / file)
        rows.append({"image": file, "question": question, "answer": answer})
    return _write_rows(folder, rows, rng)


def write_captions(folder: Path, names: list[str], n: int, seed: int, size: int = 32) -> Path:
    """``n`` caption rows per domain in ``names`` (one shared question) as ``folder/data.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"captions:{seed}")
    rows = []
    for name in names:
        dom = domain(name)
        for i in range(n):
            img, _, answer = dom.sample(i, rng, size)
            file = f"{name}{i:04d}.png"
            img.save(folder / file)
            rows.append({"image": file, "question": CAPTION_QUESTION, "answer": dom.caption.format(answer=answer)})
    return _write_rows(folder, rows, rng)
