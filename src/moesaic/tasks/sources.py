"""Lists of images for ``moesaic index`` and ``moesaic batch``: a folder (recursive), a CSV or a JSONL file.

CSV/JSONL rows name their image in an ``image``, ``path``, ``url`` or ``file`` column; relative paths are
resolved against the file's folder; other columns travel along as metadata. A row's key (what ``batch``
resumes by and ``index`` stores) is its ``id`` column when there is one.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from moesaic.errors import InputError
from moesaic.inputs.jsonl import iter_jsonl

__all__ = ["ImageRow", "list_images", "IMAGE_SUFFIXES", "IMAGE_COLUMNS"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGE_COLUMNS = ("image", "path", "url", "file")


@dataclass(frozen=True)
class ImageRow:
    id: str  # stable key: the reference as given (resolved path for local files)
    ref: str  # what open_image takes
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> Path | None:
        path = Path(self.ref)
        return path if not self.ref.startswith(("http://", "https://", "data:")) and path.is_file() else None


def _resolve(ref: str, base: Path) -> str:
    if ref.startswith(("http://", "https://", "data:")):
        return ref
    path = Path(ref).expanduser()
    return str((base / path).resolve() if not path.is_absolute() else path)


def _row(data: dict[str, object], base: Path, where: str) -> ImageRow:
    lowered = {str(k).strip().lower(): v for k, v in data.items()}
    column = next((c for c in IMAGE_COLUMNS if lowered.get(c)), None)
    if column is None:
        raise InputError(f"{where} has no image column", f"name the image in a column called one of {IMAGE_COLUMNS}")
    ref = _resolve(str(lowered[column]).strip(), base)
    extra = {k: str(v) for k, v in lowered.items() if k not in (column, "id") and v not in (None, "")}
    return ImageRow(id=_row_id(ref, lowered.get("id"), extra), ref=ref, extra=extra)


def _row_id(ref: str, given: object, extra: dict[str, str]) -> str:
    """The row's ``id`` column, else the image reference (plus a digest of the other columns, so two rows
    asking different questions about one image stay two rows)."""
    if given not in (None, ""):
        return str(given)
    if not extra:
        return ref
    digest = hashlib.sha1(json.dumps(extra, sort_keys=True).encode("utf-8")).hexdigest()[:10]
    return f"{ref}#{digest}"


def _from_csv(path: Path) -> list[ImageRow]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [_row(r, path.parent, f"{path} row {i + 2}") for i, r in enumerate(csv.DictReader(fh))]


def _from_jsonl(path: Path) -> list[ImageRow]:
    rows = []
    for n, data in iter_jsonl(path):
        if isinstance(data, str):
            data = {"image": data}
        if not isinstance(data, dict):
            raise InputError(f"{path} line {n} is not an object", 'write {"image": "path/or/url"} per line')
        rows.append(_row(data, path.parent, f"{path} line {n}"))
    return rows


def list_images(source: str | Path) -> list[ImageRow]:
    """Every image a folder, CSV or JSONL names, in a stable order."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a folder of images, a .csv or a .jsonl file")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rows = [ImageRow(id=str(p.resolve()), ref=str(p.resolve())) for p in files]
    elif path.suffix.lower() == ".csv":
        rows = _from_csv(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _from_jsonl(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        rows = [ImageRow(id=str(path.resolve()), ref=str(path.resolve()))]
    else:
        raise InputError(f"{path} is neither a folder, a CSV, a JSONL nor an image", "pass one of those")
    if not rows:
        raise InputError(f"{path} names no images", f"add images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return rows
