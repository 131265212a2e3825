"""Encoded image bytes → an upright RGB ``PIL.Image.Image``, refusing what is unsafe or broken.

Order matters: the header is read first (``Image.open`` decodes no pixels) and the pixel count checked
against ``policy.max_pixels`` before any decoding, so a decompression bomb costs nothing. Only the decoders in
``policy.formats`` are tried. JPEGs much larger than ``policy.target_size`` are decoded at a reduced scale
(libjpeg's DCT scaling via ``draft``). Then the first frame is decoded, EXIF orientation applied, and any
mode (palette, alpha, CMYK, 16-bit, float) converted to RGB — transparency composited on white. Last, the
shape is bounded (:func:`moesaic.inputs.shape.fit_shape`): the longest side is at most ``policy.max_side``
(downscaled) and the aspect ratio at most ``policy.max_aspect_ratio`` (thin images letterboxed on white), so no
model or expert downstream resizes a 1×100000 strip into a gigabyte.
"""

from __future__ import annotations

import io
import logging
import math
from typing import Protocol

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from moesaic.errors import ImageError
from moesaic.inputs.policy import ImagePolicy
from moesaic.inputs.shape import fit_shape

__all__ = ["decode_image", "to_rgb", "check_pixels", "sniff_kind", "bounded", "PixelReserver",
           "declared_pixels"]

log = logging.getLogger(__name__)

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_NOT_RASTER = (
    (b"%pdf", "a PDF document", "export the page as PNG or JPEG"),
    (b"%!ps", "a PostScript/EPS file", "convert it to PNG or JPEG"),
    (b"<!doctype html", "an HTML page", "link or send the image file itself, not a web page"),
    (b"<html", "an HTML page", "link or send the image file itself, not a web page"),
)


def sniff_kind(data: bytes) -> tuple[str, str] | None:
    """(what it is, how to fix) for well-known non-raster content, else ``None``."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or b"<svg" in head[:256]:
        return "an SVG (vector) image, which is not supported", "convert it to PNG or JPEG first"
    for magic, what, fix in _NOT_RASTER:
        if head.startswith(magic):
            return what, fix
    return None


def check_pixels(size: tuple[int, int], policy: ImagePolicy) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"image claims an empty size {width}x{height}", "send a valid image")
    if width * height > policy.max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {policy.max_pixels}",
            "downscale the image before sending it, or raise max_pixels",
        )


def _open(data: bytes, policy: ImagePolicy) -> Image.Image:
    if not data:
        raise ImageError("image is empty (0 bytes)", "send the image file's bytes, not an empty body")
    if len(data) > policy.max_bytes:
        raise ImageError(
            f"image is {len(data)} bytes, over the limit of {policy.max_bytes}",
            "send a smaller image, or raise max_bytes",
        )
    kind = sniff_kind(data)
    if kind is not None:
        raise ImageError(f"the data is {kind[0]}, not a raster image", kind[1])
    Image.init()
    formats = [f for f in policy.formats if f in Image.OPEN]  # MPO opens through the JPEG plugin
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    except UnidentifiedImageError:
        start = data[:8].hex(" ")
        raise ImageError(
            f"the {len(data)} bytes are not an image in an accepted format (they start with {start})",
            f"send {', '.join(policy.formats)} data; check the reference points at the image file itself",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read the image header: {exc}", "the file is damaged; send it again") from None


def _bomb(exc: Exception) -> ImageError:
    return ImageError(f"image is too large to decode safely: {exc}", "downscale the image before sending it")


class PixelReserver(Protocol):
    """A budget of decoded pixels shared by concurrent decodes (the server's memory budget).

    ``reserve`` blocks until the pixels fit or raises (the server answers 503); ``release`` returns them."""

    def reserve(self, pixels: int) -> None: ...

    def release(self, pixels: int) -> None: ...


def declared_pixels(data: bytes, policy: ImagePolicy) -> int:
    """Width × height from the header alone (no pixels decoded), after the same checks as decoding."""
    image = _open(data, policy)
    check_pixels(image.size, policy)
    return image.width * image.height


def decode_image(data: bytes, policy: ImagePolicy, reserver: PixelReserver | None = None) -> Image.Image:
    """Decode ``data`` under ``policy`` into a plain (not file-backed) RGB image.

    With ``reserver``, the pixels the header declares are reserved before decoding; once decoded, the
    reservation shrinks to the image kept (the caller releases that when it drops the image)."""
    image = _open(data, policy)
    check_pixels(image.size, policy)
    if reserver is None:
        return _decode_opened(image, policy)
    declared = image.width * image.height
    reserver.reserve(declared)
    try:
        out = _decode_opened(image, policy)
    except BaseException:
        reserver.release(declared)
        raise
    kept = out.width * out.height
    if kept < declared:
        reserver.release(declared - kept)
    elif kept > declared:  # letterboxing added padding: count it too
        reserver.reserve(kept - declared)
    return out


def _decode_opened(image: Image.Image, policy: ImagePolicy) -> Image.Image:
    if policy.target_size and image.format in ("JPEG", "MPO"):
        original = image.size
        image.draft(None, (policy.target_size, policy.target_size))
        if image.size != original:
            log.debug("JPEG %s decoded at reduced size %s", original, image.size)
    try:
        image.seek(0)  # first frame of animated GIF/WebP/APNG/MPO
        image.load()
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"the {image.format or 'image'} data is truncated or corrupt ({exc})",
            "send the complete file again; it may have been cut off in transfer",
        ) from None
    try:
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable EXIF orientation: %s", exc)
        upright = image
    return bounded(to_rgb(upright), policy)


def bounded(image: Image.Image, policy: ImagePolicy) -> Image.Image:
    """``image`` with its longest side and aspect ratio inside the policy (downscaled, then letterboxed)."""
    fitted = fit_shape(image, max_side=policy.max_side, max_aspect=policy.max_aspect_ratio)
    if fitted is not image:
        log.debug("image %s fitted to %s (max side %d, max aspect %g)", image.size, fitted.size,
                  policy.max_side, policy.max_aspect_ratio)
    return fitted


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey → 8-bit grey, scaled (not clipped) to 0..255.

    One linear ``point`` and one ``convert`` in Pillow's C code: a few passes over the pixels and no float64
    copies (numpy on a 4096² float TIFF took seconds and over a GB). Rounds to nearest; NaN becomes 0."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    low, high = image.getextrema()  # type: ignore[misc]
    peak = _peak(image, high)
    if image.mode == "F":
        scale = 255.0 if peak <= 1.0 else 1.0
    else:
        scale = 1 / 257 if peak <= 65535 else 255 / max(peak, 1)  # 65535 → 255, 32768 → 128
    scaled = image.point(lambda v: v * scale + 0.5)  # a linear map: evaluated in C
    return scaled.convert("L")  # clips to 0..255


def _peak(image: Image.Image, high: float) -> float:
    """The largest finite value; Pillow's extrema are NaN when a NaN is present, then a strided sample
    (at most ~1M values) of the finite ones decides."""
    if not math.isnan(high) and not math.isinf(high):
        return float(high)
    arr = np.asarray(image)  # (height, width): a view of Pillow's buffer is not available, this copies once
    step = max(1, int(math.sqrt(arr.size / 1_000_000)))
    sample = arr[::step, ::step]
    finite = sample[np.isfinite(sample)]
    return float(finite.max()) if finite.size else 0.0


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB; transparency on white, 16-bit and float grey rescaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image.copy() if isinstance(image, ImageFile.ImageFile) else image  # detach from the file
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        return _high_depth_to_l(image).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"cannot convert a {mode} image to RGB: {exc}", "convert the image to RGB first") from None
