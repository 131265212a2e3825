"""Dominant colours: k-means on a downsized image, cluster centres named from a fixed palette.

The image is shrunk to at most 64×64 pixels, clustered with k-means (k-means++ start, fixed seed, so the
result is deterministic) in CIE Lab space, and each cluster centre gets the name of the nearest palette
colour in Lab (perceptual distance). Clusters with the same name are merged and their shares added.
A plain background is a real colour and is reported; ``ignore_background=True`` drops the colour that
fills most of the image border (e.g. the white of a product shot) and renormalises the shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from moesaic.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "NamedColor", "PALETTE", "BACKDROP_DISTANCE", "dominant_colors", "foreground_pixels", "name_of", "rgb_to_lab",
    "subject_colors",
]

# A fixed palette of human colour names (sRGB).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "dark grey": (80, 80, 80),
    "grey": (150, 150, 150),
    "white": (245, 245, 245),
    "red": (200, 30, 35),
    "maroon": (120, 20, 30),
    "orange": (240, 130, 30),
    "yellow": (245, 215, 40),
    "beige": (220, 200, 160),
    "brown": (125, 80, 45),
    "olive": (120, 120, 40),
    "green": (50, 150, 60),
    "dark green": (25, 85, 35),
    "teal": (30, 128, 128),
    "sky blue": (120, 180, 230),
    "blue": (40, 90, 210),
    "navy blue": (10, 15, 110),
    "purple": (120, 50, 150),
    "pink": (240, 150, 180),
}

MAX_SIDE = 64
CLUSTERS = 8


@dataclass(frozen=True)
class NamedColor:
    name: str
    rgb: tuple[int, int, int]
    share: float  # fraction of the (kept) pixels, 0..1


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0..255, shape (..., 3) → CIE Lab (D65), same shape."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])  # (..., 3)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab_l = 116 * f[..., 1] - 16
    lab_a = 500 * (f[..., 0] - f[..., 1])
    lab_b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lab_l, lab_a, lab_b], axis=-1)


_NAMES = list(PALETTE)
_PALETTE_LAB = rgb_to_lab(np.array([PALETTE[n] for n in _NAMES]))  # (P, 3)


def name_of(rgb: tuple[int, int, int] | np.ndarray) -> str:
    """The palette name nearest to one sRGB colour."""
    return _NAMES[int(_nearest(rgb_to_lab(np.asarray(rgb)[None]))[0])]


def _nearest(lab: np.ndarray) -> np.ndarray:
    """(n, 3) Lab → (n,) palette indices."""
    d = ((lab[:, None, :] - _PALETTE_LAB[None, :, :]) ** 2).sum(-1)  # (n, P)
    return d.argmin(1)


def _kmeans(x: np.ndarray, k: int, iters: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ then Lloyd iterations. x: (n, 3) → (centres (k, 3), labels (n,))."""
    rng = np.random.default_rng(seed)
    k = min(k, len(np.unique(x, axis=0)))
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)  # (n,)
        centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.array(centres)  # (k, 3)
    for _ in range(iters):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)  # (n,)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return c, labels


def _small_pixels(image: "Image.Image") -> np.ndarray:
    """Downsized RGB pixels, shape (h, w, 3) uint8."""
    img = image.convert("RGB")
    if img.width < 1 or img.height < 1:
        raise InputError(f"image has no pixels ({img.width}x{img.height})", "send a non-empty image")
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(img)


def _border_name(names: np.ndarray) -> str:
    """The colour name that fills most of the border ring of a (h, w) name-index grid."""
    ring = np.concatenate([names[0], names[-1], names[:, 0], names[:, -1]])
    values, counts = np.unique(ring, return_counts=True)
    return _NAMES[int(values[counts.argmax()])]


def dominant_colors(image: "Image.Image", k: int = 3, *, ignore_background: bool = False) -> list[NamedColor]:
    """The ``k`` most common named colours with their share of pixels, largest first."""
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", "ask for one colour or more")
    pixels = _small_pixels(image)  # (h, w, 3)
    h, w, _ = pixels.shape
    lab = rgb_to_lab(pixels.reshape(-1, 3))  # (h*w, 3)
    centres, labels = _kmeans(lab, CLUSTERS)
    centre_names = _nearest(centres)  # (k',)
    pixel_names = centre_names[labels]  # (h*w,)
    keep = np.ones(len(labels), dtype=bool)
    if ignore_background and h > 2 and w > 2:
        background = _NAMES.index(_border_name(pixel_names.reshape(h, w)))
        if np.mean(pixel_names != background) > 0.05:  # keep it when the image is nothing but background
            keep = pixel_names != background
    flat = pixels.reshape(-1, 3)
    found = []
    for idx in np.unique(pixel_names[keep]):
        mask = keep & (pixel_names == idx)
        mean_rgb = tuple(int(round(v)) for v in flat[mask].mean(0))
        found.append(NamedColor(_NAMES[int(idx)], mean_rgb, round(float(mask.sum() / keep.sum()), 4)))
    found.sort(key=lambda c: -c.share)
    return found[:k]


BACKDROP_DISTANCE = 40.0  # RGB distance from the border colour that still counts as backdrop


def foreground_pixels(image: "Image.Image") -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """(pixels that differ from a plain backdrop (n, 3) uint8, the backdrop's RGB), or ``None`` when the
    border is busy (a scene, not a subject on a backdrop) or almost nothing differs from it."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)  # (h, w, 3)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])  # (2w + 2h, 3)
    backdrop = np.median(border, axis=0)  # (3,)
    if np.mean(np.linalg.norm(border - backdrop, axis=1) < BACKDROP_DISTANCE) < 0.8:
        return None
    dist = np.linalg.norm(arr - backdrop, axis=2)  # (h, w)
    fg = arr[dist > BACKDROP_DISTANCE]  # (n, 3)
    if len(fg) < 0.02 * dist.size:
        return None
    return fg.astype(np.uint8), tuple(int(v) for v in backdrop)  # type: ignore[return-value]


def subject_colors(image: "Image.Image", k: int = 3) -> tuple[list[NamedColor], str | None]:
    """Colours of what stands on a plain backdrop (shares of the subject's pixels) and the backdrop's name;
    for a scene without one, the whole image's colours and ``None``."""
    from PIL import Image

    split = foreground_pixels(image)
    if split is None:
        return dominant_colors(image, k=k), None
    fg, backdrop = split
    side = max(1, int(np.sqrt(len(fg))))  # a square of subject pixels (a seeded shuffle, so none is favoured)
    square = fg[np.random.default_rng(0).permutation(len(fg))[: side * side]].reshape(side, side, 3)
    return dominant_colors(Image.fromarray(square, "RGB"), k=k), name_of(np.array(backdrop))

