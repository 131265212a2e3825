"""Client side: turn an image (PIL image, file path or bytes) into a ``data:`` URL to send in a request."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from moesaic.errors import ImageError

__all__ = ["encode_image_base64", "image_mime"]


def image_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, read from the header (no pixel decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError(
            f"the {len(data)} bytes are not an image Pillow can read", "pass a PNG, JPEG, WebP or GIF file"
        ) from None
    mime = Image.MIME.get(fmt or "", None)
    if mime is None:
        raise ImageError(f"no MIME type is known for {fmt} images", "convert the image to PNG or JPEG")
    return mime


def encode_image_base64(
    image: Image.Image | str | os.PathLike[str] | bytes | bytearray,
    *,
    format: str = "PNG",
    quality: int = 90,
) -> str:
    """A ``data:image/...;base64,...`` URL for ``image``.

    Bytes and files are sent as they are (their own format); a PIL image is encoded as ``format``
    (PNG by default, lossless; ``"JPEG"`` is smaller — alpha is dropped for JPEG).
    """
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        fmt = format.upper()
        out = image.convert("RGB") if fmt == "JPEG" and image.mode != "RGB" else image
        save_kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
        try:
            out.save(buffer, format=fmt, **save_kwargs)
        except (KeyError, OSError, ValueError) as exc:
            raise ImageError(f"cannot encode the image as {format}: {exc}", "use format='PNG' or 'JPEG'") from None
        data = buffer.getvalue()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise ImageError(f"no image file at {path}", "check the path")
        data = path.read_bytes()
    else:
        raise ImageError(
            f"cannot encode a {type(image).__name__} as an image", "pass a PIL image, a file path or image bytes"
        )
    if not data:
        raise ImageError("the image is empty (0 bytes)", "pass a non-empty image")
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
