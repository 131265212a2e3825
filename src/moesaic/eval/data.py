"""Eval datasets: JSONL rows read and checked before any model is loaded.

Two row shapes (one per line; ``id`` optional, default the line number):

- question answering: ``{"image": ..., "question": ..., "reference": "..."}`` or ``"references": [...]``
- attributes: ``{"image": ..., "attributes": {"color": "red", ...}}`` (``question`` optional)

``image`` is a path (relative to the JSONL's folder), an http(s) URL, a data URL or bare base64.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesaic.errors import ConfigError
from moesaic.eval.config import EvalDataset
from moesaic.inputs.jsonl import iter_jsonl

__all__ = ["Sample", "load_samples", "attribute_prompt", "is_local_path_ref"]

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class Sample:
    id: str
    image: str  # a reference: absolute path, URL, data URL or base64
    question: str
    references: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    image_digest: str = ""  # content hash of a local image file ("" for URLs and inline data)

    @property
    def kind(self) -> str:
        return "attributes" if self.attributes else "qa"

    def fingerprint(self) -> str:
        """Hash of what the model is asked (the image's bytes, or its reference, + the question): part of the
        cache key, so an edited question or a replaced image file is asked again, a moved dataset is not."""
        image = self.image_digest or self.image
        return hashlib.sha256(f"{image}\n{self.question}".encode()).hexdigest()[:16]


def attribute_prompt(fields: list[str]) -> str:
    return "Describe the product as a JSON object with the keys: " + ", ".join(fields) + "."


def is_local_path_ref(ref: str, folder: Path | None = None) -> bool:
    """True when ``ref`` is a file path: an existing file (relative to ``folder`` when given), or anything
    that is neither a URL, a data URL nor a long base64 string (a path that does not exist)."""
    if ref.startswith(("http://", "https://", "data:")):
        return False
    if len(ref) < 4096 and ((folder or Path.cwd()) / ref).is_file():
        return True
    return len(ref) < 64 or _BASE64.fullmatch(ref) is None


def _row_error(path: Path, line: int, what: str, hint: str) -> ConfigError:
    return ConfigError(f"{path}:{line}: {what}", hint)


def _parse_row(spec: EvalDataset, line_no: int, row: Any) -> Sample:
    path = spec.path
    if not isinstance(row, dict):
        raise _row_error(path, line_no, "each line must be a JSON object", 'write {"image": ..., "question": ...}')
    image = row.get("image")
    if not isinstance(image, str) or not image:
        raise _row_error(path, line_no, "missing 'image'", "give an image path, URL, data URL or base64")
    digest = ""
    if is_local_path_ref(image, path.parent):
        resolved = (path.parent / image).resolve()
        if not resolved.is_file():
            raise _row_error(path, line_no, f"image {image!r} not found (looked at {resolved})",
                             "paths are relative to the JSONL file's folder")
        image, digest = str(resolved), hashlib.sha256(resolved.read_bytes()).hexdigest()[:16]
    sample_id = str(row.get("id", line_no))
    attributes = row.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict) or not attributes:
            raise _row_error(path, line_no, "'attributes' must be a non-empty object", 'write {"color": "red"}')
        question = row.get("question") or spec.prompt or attribute_prompt(list(attributes))
        return Sample(sample_id, image, str(question), attributes=dict(attributes), image_digest=digest)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _row_error(path, line_no, "missing 'question'", "question rows need a non-empty 'question'")
    refs = row.get("references", row.get("reference"))
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise _row_error(path, line_no, "missing 'reference' (a string) or 'references' (a list of strings)",
                         "give the expected answer(s), or 'attributes' for attribute rows")
    return Sample(sample_id, image, question, references=tuple(refs), image_digest=digest)


def load_samples(spec: EvalDataset, max_samples: int | None = None) -> list[Sample]:
    """Read and validate ``spec.path``; the first ``max_samples`` rows when given."""
    path = spec.path
    if not path.is_file():
        raise ConfigError(f"dataset {spec.name!r}: {path} does not exist", "check datasets[].path")
    samples: list[Sample] = []
    seen: set[str] = set()
    for line_no, row in iter_jsonl(path, ConfigError):
        sample = _parse_row(spec, line_no, row)
        if sample.id in seen:
            raise _row_error(path, line_no, f"duplicate id {sample.id!r}", "ids must be unique within a dataset")
        seen.add(sample.id)
        samples.append(sample)
        if max_samples is not None and len(samples) >= max_samples:
            break
    if not samples:
        raise ConfigError(f"dataset {spec.name!r}: {path} has no rows", "add one JSON object per line")
    return samples
