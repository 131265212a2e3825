"""``moesaic index FOLDER|CSV|JSONL|VIDEO --db PATH``: images and videos into one search index.

Indexing is incremental: a local file whose mtime and size match the index is skipped without reading
it; one whose mtime or size changed but whose SHA-256 did not only gets its fingerprint refreshed; remote
references already indexed are skipped. Each batch of images is written in one SQLite transaction, so an
interrupted run keeps everything committed before it. Videos (a video file, or the videos in a folder)
are indexed by their sampled frames (:mod:`.video_index`). The resolved config is saved next to the index.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from moesaic.config import CommandConfig
from moesaic.errors import InputError
from moesaic.progress import progress
from moesaic.tasks.base import open_image
from moesaic.tasks.search.embedders import ImageEmbedder, make_embedder
from moesaic.tasks.search.frames import FrameSampling
from moesaic.tasks.search.store import Fingerprint, VectorStore
from moesaic.tasks.search.video_index import VideoOutcome, index_video, list_videos
from moesaic.tasks.sources import ImageRow, list_images

__all__ = ["IndexConfig", "IndexResult", "index"]

log = logging.getLogger(__name__)
COMMIT_EVERY = 16


class IndexConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("source",)

    source: str = Field(description="a folder of images and/or videos, a CSV or JSONL naming images, or a video")
    db: str = Field(description="the index file (SQLite), created when missing")
    embedder: str = Field("starter", description="'starter' (offline captions + MiniLM) or 'clip:<model>'")
    ocr: bool = Field(True, description="read text in images into the caption (starter embedder)")
    prune: bool = Field(False, description="drop indexed images and videos that the source no longer lists")
    sampling: FrameSampling = Field(default_factory=FrameSampling,
                                    description="which video frames are indexed (--sampling.floor_fps 2, …)")


class IndexResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: str
    embedder: str
    dim: int
    added: int
    updated: int
    skipped: int
    removed: int
    total: int = Field(description="images in the index")
    videos_added: int = Field(0, description="videos indexed now (new or changed)")
    videos_skipped: int = Field(0, description="videos left as they were (unchanged)")
    frames_added: int = Field(0, description="video frames embedded now")
    videos: int = Field(0, description="videos in the index")
    frames: int = Field(0, description="sampled video frames in the index")
    failed: list[str] = Field(default_factory=list, description="images or videos that could not be read, with why")

    def render(self) -> str:
        lines = []
        if self.added or self.updated or self.skipped or self.removed or self.total or not self.videos:
            lines.append(f"{self.db}: {self.added} added, {self.updated} re-embedded, {self.skipped} unchanged, "
                         f"{self.removed} removed; {self.total} images ({self.embedder}, {self.dim}-d)")
        if self.videos or self.videos_added or self.videos_skipped:
            lines.append(f"{self.db}: {_n(self.videos_added, 'video')} indexed ({_n(self.frames_added, 'frame')}), "
                         f"{self.videos_skipped} unchanged; {_n(self.videos, 'video')} and "
                         f"{_n(self.frames, 'frame')} in the index ({self.embedder}, {self.dim}-d)")
        return "\n".join([*lines, *(f"failed: {f}" for f in self.failed)])


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fingerprint(row: ImageRow, with_hash: bool) -> Fingerprint:
    path = row.local
    if path is None:
        return Fingerprint(None, None, None)
    stat = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if with_hash else None
    return Fingerprint(stat.st_mtime_ns, stat.st_size, digest)


def _plan(store: VectorStore, row: ImageRow) -> tuple[str, Fingerprint]:
    """"skip" | "touch" | "new" | "changed", with the fingerprint to store."""
    old = store.fingerprint(row.ref)
    if old is None:
        return "new", _fingerprint(row, with_hash=True)
    if row.local is None:
        return "skip", old
    quick = _fingerprint(row, with_hash=False)
    if (quick.mtime_ns, quick.size) == (old.mtime_ns, old.size):
        return "skip", old
    full = _fingerprint(row, with_hash=True)
    return ("touch" if full.sha256 == old.sha256 else "changed"), full


def _sources(source: str) -> tuple[list[ImageRow], list[Path]]:
    """The images and the videos ``source`` names (a folder may hold both)."""
    if not Path(source).expanduser().exists():
        raise InputError(f"{source} does not exist",
                         "pass a folder of images or videos, a .csv or .jsonl file, or a video", param="source")
    videos = list_videos(source)
    if videos and Path(source).expanduser().is_file():
        return [], videos
    try:
        return list_images(source), videos
    except InputError:
        if videos:  # a folder of videos only
            return [], videos
        raise


def _index_images(store: VectorStore, rows: list[ImageRow], embedder: ImageEmbedder,
                  failed: list[str]) -> dict[str, int]:
    counts = {"new": 0, "changed": 0, "skip": 0, "touch": 0}
    pending = 0
    store.db.execute("BEGIN")
    for row in progress(rows, desc="indexing", total=len(rows), unit="img"):
        action, fp = _plan(store, row)
        counts[action] += 1
        if action == "touch":
            store.touch(row.ref, fp)
        elif action in ("new", "changed"):
            try:
                described = embedder.describe(open_image(row.ref), row.extra)
            except InputError as exc:  # one unreadable image does not stop the run
                log.warning("skipped %s: %s", row.ref, exc)
                counts[action] -= 1
                failed.append(f"{row.ref}: {exc.message}")
                continue
            store.upsert(row.ref, fp, described.caption, described.vector, described.attrs, row.extra)
            pending += 1
            if pending % COMMIT_EVERY == 0:
                store.db.commit()
                store.db.execute("BEGIN")
    store.db.commit()
    return counts


def index(config: IndexConfig) -> IndexResult:
    """Index images (folder, CSV or JSONL) and videos (a file or a folder) for search; unchanged files are skipped."""
    rows, videos = _sources(config.source)
    embedder = make_embedder(config.embedder, ocr=config.ocr)
    failed: list[str] = []
    outcomes: list[VideoOutcome] = []
    with VectorStore(config.db, create=True) as store:
        store.bind(embedder.name, embedder.dim)
        counts = _index_images(store, rows, embedder, failed)
        for path in videos:
            try:
                outcomes.append(index_video(store, embedder, path, config.sampling))
            except InputError as exc:  # one unreadable video does not stop the run
                log.warning("skipped %s: %s", path, exc)
                failed.append(f"{path}: {exc.message}")
        removed = 0
        if config.prune:
            with store.db:
                removed = store.remove_missing({r.ref for r in rows})
                keep = {str(p) for p in videos}
                for gone in [v for v in store.videos() if v not in keep]:
                    store.remove_video(gone)
                    removed += 1
        images, n_videos, frames = store.counts()
    config.save(Path(config.db).parent, name=Path(config.db).name + ".config.yaml")
    log.info("indexed %s: %s", config.source, counts)
    return IndexResult(db=config.db, embedder=embedder.name, dim=embedder.dim, added=counts["new"],
                       updated=counts["changed"], skipped=counts["skip"] + counts["touch"], removed=removed,
                       total=images, videos_added=sum(o.action in ("new", "changed") for o in outcomes),
                       videos_skipped=sum(o.action in ("skip", "touch") for o in outcomes),
                       frames_added=sum(o.frames for o in outcomes), videos=n_videos, frames=frames, failed=failed)
