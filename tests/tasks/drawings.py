"""Generated product photos for the task tests: simple shapes in known colours on a light background."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

__all__ = ["COLOURS", "draw_product", "save_products"]

COLOURS = {
    "red": (200, 30, 35),
    "blue": (30, 60, 190),
    "green": (40, 150, 60),
    "yellow": (235, 205, 40),
    "black": (20, 20, 22),
    "white": (250, 250, 250),
}
BACKGROUND = (226, 226, 230)


def _tshirt(draw: ImageDraw.ImageDraw, s: int, rgb: tuple[int, int, int]) -> None:
    u = s / 100
    body = [(30, 20), (42, 14), (58, 14), (70, 20), (92, 34), (82, 48), (72, 42), (72, 90), (28, 90), (28, 42),
            (18, 48), (8, 34)]
    draw.polygon([(x * u, y * u) for x, y in body], fill=rgb)
    draw.ellipse([43 * u, 10 * u, 57 * u, 20 * u], fill=BACKGROUND)


def _shoe(draw: ImageDraw.ImageDraw, s: int, rgb: tuple[int, int, int]) -> None:
    u = s / 100
    upper = [(12, 70), (14, 48), (30, 46), (44, 56), (70, 62), (88, 66), (90, 76), (12, 76)]
    draw.polygon([(x * u, y * u) for x, y in upper], fill=rgb)
    draw.rectangle([10 * u, 76 * u, 92 * u, 82 * u], fill=(245, 245, 245))
    for i in range(4):
        draw.line([((30 + i * 5) * u, 52 * u), ((34 + i * 5) * u, 58 * u)], fill=(240, 240, 240), width=2)


def _bag(draw: ImageDraw.ImageDraw, s: int, rgb: tuple[int, int, int]) -> None:
    u = s / 100
    draw.arc([32 * u, 14 * u, 68 * u, 50 * u], 180, 360, fill=rgb, width=max(2, int(4 * u)))
    draw.rounded_rectangle([20 * u, 32 * u, 80 * u, 86 * u], radius=6 * u, fill=rgb)


SHAPES = {"t-shirt": _tshirt, "shoe": _shoe, "bag": _bag}


def draw_product(kind: str, colour: str, size: int = 224) -> Image.Image:
    """A ``kind`` ("t-shirt", "shoe", "bag") filled with ``colour`` (a key of COLOURS)."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    SHAPES[kind](ImageDraw.Draw(img), size, COLOURS[colour])
    return img.filter(ImageFilter.GaussianBlur(0.6))


def save_products(folder: Path, items: list[tuple[str, str]], size: int = 224) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, colour in items:
        path = folder / f"{colour}-{kind}.png"
        draw_product(kind, colour, size).save(path)
        paths.append(path)
    return paths
