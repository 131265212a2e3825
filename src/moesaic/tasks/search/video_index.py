"""Videos in the search index: sampled frames (see :mod:`.frames`) embedded like images, with their time.

A video is skipped when its modification time and size, and the sampling it was indexed with, are
unchanged (or its SHA-256 is, after a touch). Frames are committed in batches, but the video only counts
as indexed once its last frame is in: a video that fails or is interrupted is removed again (and one left
half-written by a killed process is indexed again from the start next time).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moesaic.errors import InputError
from moesaic.progress import progress
from moesaic.tasks.search.embedders import ImageEmbedder
from moesaic.tasks.search.frames import VIDEO_SUFFIXES, FrameSampling, sample_frames, video_info
from moesaic.tasks.search.store import Fingerprint, VectorStore

__all__ = ["VideoOutcome", "list_videos", "index_video", "is_video", "file_fingerprint"]

log = logging.getLogger(__name__)
COMMIT_FRAMES = 32


@dataclass(frozen=True)
class VideoOutcome:
    path: str
    action: Literal["new", "changed", "skip", "touch"]
    frames: int  # frames embedded now (0 when skipped)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_videos(source: str | Path) -> list[Path]:
    """The video itself, or every video under a folder (recursive, sorted); [] for anything else."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path.resolve()] if is_video(path) else []
    if path.is_dir():
        return sorted(p.resolve() for p in path.rglob("*") if p.is_file() and is_video(p))
    return []


def file_fingerprint(path: Path, with_hash: bool) -> Fingerprint:
    """mtime and size, and the SHA-256 read in 1 MiB blocks (videos can be large) when ``with_hash``."""
    stat = path.stat()
    digest = None
    if with_hash:
        sha = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        digest = sha.hexdigest()
    return Fingerprint(stat.st_mtime_ns, stat.st_size, digest)


def _plan(store: VectorStore, path: Path, sampling: str) -> tuple[Literal["new", "changed", "skip", "touch"], Fingerprint]:
    old = store.video(str(path))
    if old is None:
        return "new", file_fingerprint(path, with_hash=True)
    quick = file_fingerprint(path, with_hash=False)
    same_settings = old.complete and old.sampling == sampling
    if same_settings and (quick.mtime_ns, quick.size) == (old.fingerprint.mtime_ns, old.fingerprint.size):
        return "skip", old.fingerprint
    full = file_fingerprint(path, with_hash=True)
    return ("touch" if same_settings and full.sha256 == old.fingerprint.sha256 else "changed"), full


def index_video(store: VectorStore, embedder: ImageEmbedder, path: Path, sampling: FrameSampling) -> VideoOutcome:
    """Index one video's sampled frames into ``store`` (unless unchanged); commits as it goes."""
    settings = sampling.model_dump_json()
    action, fp = _plan(store, path, settings)
    if action in ("skip", "touch"):
        if action == "touch":
            with store.db:
                store.touch_video(str(path), fp)
        return VideoOutcome(str(path), action, 0)
    info = video_info(path)  # a clear error before any write when the file is no video
    with store.db:
        video_id = store.begin_video(str(path), fp, settings)
    seconds = max(1, math.ceil(info.duration or 0.0))
    ticks = iter(progress(range(seconds), desc=path.name[:24], total=seconds, unit="s"))
    shown, last, count = 0, 0.0, 0
    store.db.execute("BEGIN")
    try:
        for frame in sample_frames(path, sampling):
            described = embedder.describe(frame.image)
            store.add_frame(video_id, str(path), frame.time, frame.image.size, described.caption, described.vector,
                            described.attrs)
            count, last = count + 1, frame.time
            if count % COMMIT_FRAMES == 0:
                store.db.commit()
                store.db.execute("BEGIN")
            while shown < min(seconds, int(frame.time)):  # advance the bar to the video time reached
                next(ticks, None)
                shown += 1
        if count == 0:
            raise InputError(f"{path} holds no decodable frames", "pass a video with at least one frame")
        step = 1.0 / info.fps
        store.finish_video(video_id, round(max(last + step, info.duration or 0.0), 3))
        store.db.commit()
    except BaseException:  # a video is in the index whole or not at all
        store.db.rollback()
        with store.db:
            store.remove_video(str(path))
        raise
    for _ in ticks:
        pass
    log.info("indexed %s: %d frames (%s)", path, count, action)
    return VideoOutcome(str(path), action, count)
