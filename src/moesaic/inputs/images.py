"""Any image reference → an RGB ``PIL.Image.Image``, safely: :func:`load_image`.

A reference is one of: an http(s) URL (fetched under the SSRF rules of :mod:`moesaic.inputs.fetch`), a
``data:image/...;base64,...`` URL, bare base64 (standard or URL-safe alphabet, padding optional, whitespace
and newlines ignored), a local path (only when the policy allows local paths), raw ``bytes``, or an
already-open ``PIL.Image.Image``. Whatever the source, the bytes go through
:func:`moesaic.inputs.decode.decode_image` (size, pixel and format checks; EXIF; RGB;
bounded shape).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

from PIL import Image

from moesaic.errors import ImageError, URLPolicyError
from moesaic.inputs.decode import PixelReserver, bounded, check_pixels, decode_image, to_rgb
from moesaic.inputs.fetch import fetch_image_bytes
from moesaic.inputs.policy import ImagePolicy

__all__ = ["ImagePolicy", "ImageRef", "load_image", "load_image_bytes", "decode_base64", "parse_data_url"]

ImageRef = str | bytes | bytearray | memoryview | os.PathLike[str] | Image.Image

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_URLISH = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/\-_=\s]+$")
_WHITESPACE = re.compile(r"\s+")
_MAX_PATH = 4096
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_REFUSED_SCHEMES = {
    "file", "ftp", "ftps", "gopher", "javascript", "mailto", "dict", "ldap", "smb", "tftp", "jar", "ws", "wss",
}


def load_image(ref: ImageRef, policy: ImagePolicy | None = None, *,
               reserver: PixelReserver | None = None) -> Image.Image:
    """Turn ``ref`` into an upright RGB image under ``policy`` (default: the safe server policy).

    Raises :class:`~moesaic.errors.ImageError` (not an image, too large, corrupt),
    :class:`~moesaic.errors.URLPolicyError` (a source the policy forbids) or
    :class:`~moesaic.errors.FetchError` (the URL could not be fetched). ``reserver`` counts the decoded
    pixels against a shared budget (see :class:`~moesaic.inputs.decode.PixelReserver`).
    """
    policy = policy or ImagePolicy()
    if isinstance(ref, Image.Image):
        check_pixels(ref.size, policy)
        return bounded(to_rgb(ref), policy)
    return decode_image(load_image_bytes(ref, policy), policy, reserver)


def load_image_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """The encoded bytes behind ``ref`` (fetched, base64-decoded or read), before any image decoding."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return bytes(ref)
    if isinstance(ref, os.PathLike):
        return _read_local(Path(ref), policy)
    if not isinstance(ref, str):
        raise ImageError(
            f"an image reference must be a string, bytes, a path or a PIL image, not {type(ref).__name__}",
            "pass a URL, a data URL, base64 text, a file path or the image bytes",
        )
    text = ref.strip()
    if not text:
        raise ImageError("the image reference is empty", "pass a URL, a data URL, base64 text or a file path")
    if text[:5].lower() == "data:":
        return parse_data_url(text, max_bytes=policy.max_bytes)
    if _URLISH.match(text):
        return fetch_image_bytes(text, policy)  # refuses every scheme but http(s) with a clear error
    scheme = _scheme_of(text)
    if scheme in _REFUSED_SCHEMES:
        raise URLPolicyError(
            f"URL scheme {scheme!r} is not allowed for images ({_shown(text)})",
            "use an http:// or https:// URL, a data: URL or base64",
        )
    return _path_or_base64(text, policy)


def _path_or_base64(text: str, policy: ImagePolicy) -> bytes:
    """Bare base64 or a local path. Base64 never holds ``.``, ``~`` or ``\\``, but may start with ``/``
    (JPEG is ``/9j/...``): a short ``/``-led string is read as a path unless it is JPEG base64."""
    path_like = len(text) <= _MAX_PATH and "\n" not in text
    if path_like and policy.local_paths_enabled:
        path = Path(text).expanduser()
        if _exists(path):
            return _read_local(path, policy)
    looks_path = path_like and _looks_like_path(text)
    if _B64_CHARS.match(text) and not (looks_path and len(text) <= 256 and not text.startswith("/9j/")):
        return decode_base64(text, max_bytes=policy.max_bytes)
    if not looks_path:
        raise ImageError(
            f"the image reference is not a URL, a data URL or valid base64 ({_shown(text)})",
            "send an http(s) URL, data:image/...;base64,... or the base64 of the file",
        )
    if not policy.local_paths_enabled:
        raise URLPolicyError(
            f"local file paths are not allowed here ({_shown(text)})",
            "send the image as an http(s) URL, a data URL or base64 instead",
        )
    raise ImageError(f"no image file at {_shown(text)}", "check the path, or send the image as a URL or base64")


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~"))
        or "\\" in text
        or bool(_EXTENSION.search(text))
        or (len(text) > 2 and text[1] == ":" and text[0].isalpha())  # C:\... or C:/...
    )


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # name too long, NUL byte, ...
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _read_local(path: Path, policy: ImagePolicy) -> bytes:
    if not policy.local_paths_enabled:
        raise URLPolicyError(
            f"local file paths are not allowed here ({_shown(str(path))})",
            "send the image as an http(s) URL, a data URL or base64 instead",
        )
    try:
        resolved = path.expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise ImageError(f"no image file at {_shown(str(path))}", "check the path") from None
    if policy.allowed_folders:
        folders = [Path(f).expanduser().resolve() for f in policy.allowed_folders]
        if not any(_inside(resolved, folder) for folder in folders):
            raise URLPolicyError(
                f"{_shown(str(path))} is outside the allowed folders ({', '.join(map(str, folders))})",
                "put the image inside an allowed folder, or send it as a URL, data URL or base64",
            )
    if not resolved.is_file():
        raise ImageError(f"{_shown(str(path))} is not a regular file", "pass the path of an image file")
    size = resolved.stat().st_size
    if size > policy.max_bytes:
        raise ImageError(
            f"{_shown(str(path))} is {size} bytes, over the limit of {policy.max_bytes}",
            "use a smaller image, or raise max_bytes",
        )
    with resolved.open("rb") as fh:
        _recheck_opened(fh.fileno(), path, policy)
        return fh.read(policy.max_bytes + 1)


def _recheck_opened(fd: int, path: Path, policy: ImagePolicy) -> None:
    """Where /proc exists, check the file actually opened (a symlink swapped in after the check is caught)."""
    link = Path(f"/proc/self/fd/{fd}")
    if not policy.allowed_folders or not link.exists():
        return
    opened = Path(os.readlink(link))
    folders = [Path(f).expanduser().resolve() for f in policy.allowed_folders]
    if not any(_inside(opened, folder) for folder in folders):
        raise URLPolicyError(
            f"{_shown(str(path))} led outside the allowed folders while being opened",
            "put the image inside an allowed folder, or send it as a URL, data URL or base64",
        )


def decode_base64(text: str, *, max_bytes: int | None = None) -> bytes:
    """Bare base64 → bytes: standard or URL-safe alphabet, with or without padding, whitespace ignored.

    With ``max_bytes`` the decoded size is checked from the length first, before anything is decoded."""
    if max_bytes is None or len(text) * 3 // 4 <= max_bytes:
        try:  # the common case (standard alphabet, padded, one line) at C speed, ~3x the tolerant path
            data = base64.b64decode(text, validate=True)
            if data:
                return data
        except (binascii.Error, ValueError):
            pass  # URL-safe, unpadded, wrapped or broken: the tolerant path below decides and explains
    compact = _WHITESPACE.sub("", text).rstrip("=")
    if not compact:
        raise ImageError("the base64 image data is empty", "send the base64 of the image file")
    if max_bytes is not None and len(compact) * 3 // 4 > max_bytes:
        raise ImageError(
            f"the base64 image decodes to about {len(compact) * 3 // 4} bytes, over the limit of {max_bytes}",
            "send a smaller image, or raise max_bytes",
        )
    if not re.fullmatch(r"[A-Za-z0-9+/\-_]+", compact):
        bad = sorted({c for c in compact if not (c.isascii() and (c.isalnum() or c in "+/-_"))})
        raise ImageError(
            f"the image is not valid base64 (unexpected characters {''.join(bad)!r})",
            "send standard or URL-safe base64 of the image file",
        )
    if len(compact) % 4 == 1:
        raise ImageError(
            f"the base64 image data has an impossible length ({len(compact)} characters); it was probably cut off",
            "send the complete base64 text",
        )
    standard = compact.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"the image is not valid base64: {exc}", "send standard or URL-safe base64") from None


def parse_data_url(text: str, *, max_bytes: int | None = None) -> bytes:
    """``data:[<media type>][;base64],<data>`` → bytes; the media type must be ``image/*`` (not SVG)."""
    header, sep, payload = text[5:].partition(",")
    if not sep:
        raise ImageError("the data URL has no ',' before its data", "write it as data:image/png;base64,<data>")
    params = [p.strip().lower() for p in header.split(";")]
    media = params[0] or "text/plain"
    if media in ("image/svg+xml", "image/svg"):
        raise ImageError("SVG (vector) images are not supported", "convert the image to PNG or JPEG first")
    if not media.startswith("image/") and media not in ("image", "application/octet-stream"):
        raise ImageError(
            f"the data URL holds {media}, not an image",
            "use a data URL like data:image/png;base64,<data>",
        )
    if "base64" in params[1:]:
        return decode_base64(unquote_to_bytes(payload).decode("ascii", "replace"), max_bytes=max_bytes)
    return unquote_to_bytes(payload)


def _scheme_of(text: str) -> str | None:
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else None
