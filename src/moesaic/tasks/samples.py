"""Sample inputs made offline, for the tutorials (docs/tasks.md) and the tests: product photos (simple
shapes in known colours on a light backdrop), a video whose colour changes at known times, a spoken
question (espeak-ng) and a few real photos from scikit-image when it is installed.

``python -m moesaic.tasks.samples FOLDER`` writes them all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from moesaic.errors import MissingDependencyError, missing_extra

__all__ = ["COLOURS", "SHAPES", "NEEDLE_EVENTS", "draw_product", "save_products", "write_colour_video",
           "write_needle_video", "write_speech", "write_samples"]

COLOURS: dict[str, tuple[int, int, int]] = {
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
    """A ``kind`` (t-shirt, shoe, bag) filled with ``colour`` (a key of :data:`COLOURS`)."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    SHAPES[kind](ImageDraw.Draw(img), size, COLOURS[colour])
    return img.filter(ImageFilter.GaussianBlur(0.6))


def save_products(folder: Path, items: list[tuple[str, str]], size: int = 224) -> list[Path]:
    """Save ``(kind, colour)`` drawings as ``folder/<colour>-<kind>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, colour in items:
        path = folder / f"{colour}-{kind}.png"
        draw_product(kind, colour, size).save(path)
        paths.append(path)
    return paths


def write_colour_video(path: Path, segments: list[tuple[tuple[int, int, int], float]], fps: int = 10,
                       size: int = 64) -> Path:
    """An MPEG-4 video: each ``(rgb, seconds)`` segment is a solid colour for that long."""
    try:
        import av
    except ImportError:
        raise missing_extra("av", "tasks") from None
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb, seconds in segments:
            pixels = np.zeros((size, size, 3), dtype=np.uint8)  # (h, w, 3)
            pixels[:] = rgb
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


NEEDLE_EVENTS: tuple[tuple[str, float, float], ...] = (("red-ball", 12.0, 13.5), ("blue-t-shirt", 20.0, 24.0))


def _draw_object(frame: Image.Image, name: str) -> None:
    """``<colour>-ball`` or ``<colour>-<t-shirt|shoe|bag>`` drawn in the middle of ``frame``."""
    colour, _, kind = name.partition("-")
    w, h = frame.size
    side = int(h * 0.7)
    left, top = (w - side) // 2, (h - side) // 2
    if kind == "ball":
        ImageDraw.Draw(frame).ellipse([left, top, left + side, top + side], fill=COLOURS[colour])
    else:
        frame.paste(draw_product(kind, colour, side), (left, top))


def write_needle_video(path: Path, seconds: float = 30.0, events: tuple[tuple[str, float, float], ...] = NEEDLE_EVENTS,
                       fps: int = 10, size: tuple[int, int] = (320, 180), seed: int = 0) -> Path:
    """An MPEG-4 video of a plain, lightly textured backdrop on which each ``(object, start, end)`` event
    shows an object (``red-ball``, ``blue-t-shirt``, …; see :func:`_draw_object`) in the middle of the
    picture from ``start`` to ``end`` seconds: the haystack and its needles, with known times."""
    try:
        import av
    except ImportError:
        raise missing_extra("av", "tasks") from None
    width, height = size
    noise = np.random.default_rng(seed).normal(0.0, 4.0, (height, width, 3))  # (h, w, 3), the same every frame
    backdrop = np.clip(np.array(BACKGROUND, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    cache: dict[tuple[int, ...], np.ndarray] = {}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * fps)):
            t = i / fps
            shown = tuple(j for j, (_, start, end) in enumerate(events) if start <= t + 1e-9 < end)
            if shown not in cache:
                frame = Image.fromarray(backdrop)
                for j in shown:
                    _draw_object(frame, events[j][0])
                cache[shown] = np.asarray(frame)
            for packet in stream.encode(av.VideoFrame.from_ndarray(cache[shown], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_speech(path: Path, text: str, voice: str = "en-us") -> Path:
    """``text`` spoken by espeak-ng into a WAV file."""
    try:
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    except FileNotFoundError:
        raise MissingDependencyError("espeak-ng is not installed", "install it: apt-get install espeak-ng") from None
    return path


def write_samples(folder: Path) -> dict[str, Path]:
    """Everything the tutorials use, under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"products": folder / "products"}
    save_products(out["products"], [(k, c) for c in ("red", "blue", "green", "yellow") for k in SHAPES])
    out["shirt"] = out["products"] / "red-t-shirt.png"
    out["video"] = write_colour_video(folder / "colours.mp4", [((200, 30, 35), 1.0), ((50, 150, 60), 1.5),
                                                                ((40, 90, 210), 1.0)])
    out["needle"] = write_needle_video(folder / "needle.mp4")
    out["question"] = write_speech(folder / "question.wav", "What colour is the shirt in this picture?")
    out["examples"] = folder / "examples.yaml"
    out["examples"].write_text(
        "- image: products/blue-t-shirt.png\n  question: What colour is the product?\n  answer: blue\n"
        "- image: products/green-bag.png\n  question: What colour is the product?\n  answer: green\n",
        encoding="utf-8",
    )
    try:
        import skimage.data
    except ImportError:
        return out
    for name in ("coffee", "chelsea"):
        out[name] = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(out[name])
    return out


if __name__ == "__main__":  # pragma: no cover - a tutorial helper
    for key, path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "samples")).items():
        print(f"{key:9s} {path}")
