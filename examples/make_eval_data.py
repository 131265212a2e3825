"""Write the data of ``examples/eval.yaml``: four small JSONL datasets and their images, all made offline.

    python examples/make_eval_data.py            # writes examples/eval_data/

- colours: product drawings from :mod:`moesaic.tasks.samples` (a known colour on a light backdrop);
- tags: the bundled photo (``src/moesaic/samples/coffee.jpg``, read in place) and two product drawings,
  "What is in this image?";
- labels: shop labels rendered in DejaVu Sans (the font matplotlib ships);
- charts: a bar chart drawn by matplotlib, its values printed on the bars.

The images are committed next to the JSONL files; this script rebuilds them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from moesaic.tasks.samples import draw_product

COLOUR_ROWS = [("t-shirt", "red"), ("shoe", "blue"), ("bag", "green"), ("t-shirt", "yellow"), ("bag", "black")]
LABELS = {"sale": ("SALE 40%", (200, 30, 35)), "bread": ("FRESH BREAD", (20, 20, 22))}
BARS = {"Q1": 12, "Q2": 7, "Q3": 15, "Q4": 9}


def _font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), size)


def _label(text: str, rgb: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (360, 120), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([6, 6, 353, 113], radius=12, outline=rgb, width=4)
    font = _font(40)
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(((360 - (box[2] - box[0])) / 2, (120 - (box[3] - box[1])) / 2 - box[1]), text, fill=rgb, font=font)
    return img


def _chart(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    bars = ax.bar(list(BARS), list(BARS.values()), color="tab:blue")
    ax.bar_label(bars, fontsize=12)
    ax.set_title("Units sold per quarter")
    ax.set_ylim(0, 18)
    ax.set_yticks([])  # the values are on the bars
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_eval_data(folder: Path) -> dict[str, Path]:
    """Images under ``folder/images``; ``colours``, ``tags``, ``labels``, ``charts`` JSONL files in ``folder``."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    colours = []
    for kind, colour in COLOUR_ROWS:
        name = f"{colour}-{kind}.png"
        draw_product(kind, colour).save(images / name)
        colours.append({"id": f"{colour}-{kind}", "image": f"images/{name}",
                        "question": "What colour is the product?", "reference": colour})
    coffee = Path(__file__).resolve().parent.parent / "src" / "moesaic" / "samples" / "coffee.jpg"  # bundled
    tags = [
        {"id": "coffee", "image": os.path.relpath(coffee, folder), "question": "What is in this image?",
         "references": ["espresso", "coffee", "cup of coffee"]},
        {"id": "red-t-shirt", "image": "images/red-t-shirt.png", "question": "What is in this image?",
         "references": ["t-shirt", "jersey", "shirt"]},
        {"id": "blue-shoe", "image": "images/blue-shoe.png", "question": "What is in this image?",
         "references": ["shoe", "sneaker"]},
    ]
    labels = []
    for key, (text, rgb) in LABELS.items():
        _label(text, rgb).save(images / f"label-{key}.png")
        labels.append({"id": key, "image": f"images/label-{key}.png", "question": "What does the label say?",
                       "reference": text})
    _chart(images / "chart.png")
    charts = [{"id": "tallest", "image": "images/chart.png", "question": "What is the value of the tallest bar?",
               "reference": str(max(BARS.values()))}]
    out = {}
    for name, rows in (("colours", colours), ("tags", tags), ("labels", labels), ("charts", charts)):
        out[name] = folder / f"{name}.jsonl"
        _write(out[name], rows)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "eval_data"
    for name, path in write_eval_data(target).items():
        print(f"{name:8s} {path}")
