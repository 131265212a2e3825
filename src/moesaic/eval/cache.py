"""Per-sample answer cache: a JSONL file in the output folder, so an interrupted eval resumes.

Each line is one finished sample: the key (model name, dataset, sample id, hash of the generation params and
model identity, fingerprint of the image reference + question) and what was
measured (answer text, token counts, latency). Lines are appended and fsynced one by one; a torn last
line (a crash mid-write) is skipped on reading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["CachedAnswer", "AnswerCache", "CACHE_NAME", "append_line"]

log = logging.getLogger(__name__)

CACHE_NAME = "cache.jsonl"


class CachedAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    dataset: str
    sample_id: str
    gen_hash: str
    fingerprint: str = ""
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float
    peak_rss_bytes: int | None = None  # the model's RSS high-water mark when this answer was made
    cuda_peak_bytes: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.model, self.dataset, self.sample_id, self.gen_hash, self.fingerprint)


class AnswerCache:
    """Lookup and append; ``enabled=False`` neither reads old answers nor writes new ones."""

    def __init__(self, folder: Path, *, enabled: bool = True) -> None:
        self.path = Path(folder) / CACHE_NAME
        self.enabled = enabled
        self._entries: dict[tuple[str, str, str, str, str], CachedAnswer] = {}
        if enabled:
            self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = CachedAnswer.model_validate_json(line)
            except ValueError:
                log.warning("skipping unreadable line %d of %s", n, self.path)
                continue
            self._entries[entry.key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, model: str, dataset: str, sample_id: str, gen_hash: str, fingerprint: str = ""
    ) -> CachedAnswer | None:
        """The cached answer, if this model answered this exact sample with these generation params."""
        return self._entries.get((model, dataset, sample_id, gen_hash, fingerprint)) if self.enabled else None

    def put(self, entry: CachedAnswer) -> None:
        if not self.enabled:
            return
        append_line(self.path, json.dumps(entry.model_dump(mode="json"), ensure_ascii=False))
        self._entries[entry.key] = entry


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it; a torn last line (a crash mid-write) is first closed with a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.is_file() and path.stat().st_size > 0 and not _ends_with_newline(path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(("\n" if needs_newline else "") + line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
