"""Bounded image shapes: :func:`fit_shape` makes the longest side and the aspect ratio of an image bounded.

Thin images are real (a 3000×8 banner, a 1-pixel rule) but every model and expert resizes by one side and lets
the other follow, so an extreme aspect ratio turns into an extreme allocation further down (a 1×100000 PNG
asked the tagger for a 256×25 600 000 image). Instead of refusing them, moesaic *letterboxes* them: the image
is first downscaled so its longest side is at most ``max_side`` (aspect kept), then padded, centred, on a
plain background so that ``long side / short side <= max_aspect``. Both steps only ever shrink the worst case:
the result has at most ``max_side² / max_aspect`` pixels more than the content itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["fit_shape", "fitted_size", "padding_offset", "DEFAULT_MAX_ASPECT", "DEFAULT_MAX_SIDE", "WHITE"]

DEFAULT_MAX_ASPECT = 20.0  # long side / short side after letterboxing
DEFAULT_MAX_SIDE = 8192  # longest side after downscaling
WHITE = (255, 255, 255)


def _scaled(width: int, height: int, max_side: int) -> tuple[int, int]:
    long = max(width, height)
    if long <= max_side:
        return width, height
    scale = max_side / long
    return max(1, round(width * scale)), max(1, round(height * scale))


def fitted_size(size: tuple[int, int], *, max_side: int, max_aspect: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """(content size after downscaling, canvas size after padding) for an image of ``size``."""
    if max_side < 1 or max_aspect < 1:
        raise ValueError(f"max_side must be >= 1 and max_aspect >= 1, got {max_side} and {max_aspect}")
    content = _scaled(*size, max_side)
    width, height = content
    short_needed = math.ceil(max(width, height) / max_aspect)
    canvas = (max(width, short_needed), height) if width < height else (width, max(height, short_needed))
    return content, canvas


def fit_shape(
    image: "Image.Image", *, max_side: int = DEFAULT_MAX_SIDE, max_aspect: float = DEFAULT_MAX_ASPECT,
    fill: tuple[int, int, int] = WHITE,
) -> "Image.Image":
    """``image`` (RGB) with its longest side ≤ ``max_side`` and aspect ratio ≤ ``max_aspect``.

    Downscaling keeps the aspect ratio (Pillow's ``reduce`` then bilinear resize, so the cost follows the
    output, not the input); padding centres the content on ``fill``. An image already inside both bounds is
    returned unchanged (the same object).
    """
    from PIL import Image

    content, canvas = fitted_size(image.size, max_side=max_side, max_aspect=max_aspect)
    if content == image.size and canvas == image.size:
        return image
    if content != image.size:
        image = image.resize(content, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if canvas == content:
        return image
    out = Image.new(image.mode, canvas, fill if image.mode == "RGB" else 255)
    out.paste(image, padding_offset(content, canvas))
    return out


def padding_offset(content: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """Where :func:`fit_shape` pastes the content (left, top): centred, rounding towards the far side."""
    return (canvas[0] - content[0] + 1) // 2, (canvas[1] - content[1] + 1) // 2
