"""Synthetic data for the fine-tuning tests: the colour (and shape) of one drawn figure."""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["COLOURS", "shape_image", "write_colour_data"]

COLOURS = ("red", "green", "blue")


def shape_image(colour: str, rng: random.Random, size: tuple[int, int] = (32, 32)):  # noqa: ANN201
    """A white image with one filled square of ``colour`` at a random place."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    side = min(size) * 5 // 8
    x, y = rng.randint(0, size[0] - side), rng.randint(0, size[1] - side)
    ImageDraw.Draw(img).rectangle([x, y, x + side, y + side], fill=colour)
    return img


def write_colour_data(folder: Path, n: int, seed: int = 0, *, kind: str = "qa",
                      size: tuple[int, int] = (32, 32)) -> Path:
    """``n`` rows (colours cycle) as JSONL; kind 'qa' (question/answer) or 'attributes' (colour + shape)."""
    from PIL import ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        img = shape_image(colour, rng, size)
        name = f"img{i:03d}.png"
        if kind == "attributes":
            shape = ("square", "circle")[(i // 3) % 2]
            if shape == "circle":  # redraw as a circle
                img.paste((255, 255, 255), (0, 0, *img.size))
                ImageDraw.Draw(img).ellipse([4, 4, size[0] - 4, size[1] - 4], fill=colour)
            rows.append({"image": name, "attributes": {"color": colour, "shape": shape}})
        else:
            rows.append({"image": name, "question": "What colour is the shape?", "answer": colour})
        img.save(folder / name)
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
