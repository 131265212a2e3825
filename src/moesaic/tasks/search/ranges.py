"""Frame scores → time ranges: which sampled frames match a query, merged into ``[start, end)`` spans.

A sampled frame stands for the time until the next sample (frames are sampled as soon as the picture
changes, see :mod:`.frames`). Per video and query, the *typical* score is the time-weighted median of its
frames' scores; a frame matches when its score reaches ``min_score`` and rises ``contrast`` above the
typical one. A query for something absent neither scores high nor lifts a moment above the rest, so it
returns nothing; an object on screen all along has no contrast (pass ``contrast=0`` to find it).
Consecutive matching frames merge into one range that keeps its best score.

``--where`` keys for videos: ``video=PATH`` (the path as indexed, or just the file name) and ``time``
with ``>=``, ``<=``, ``>``, ``<`` or ``=A-B`` (seconds); ranges are clipped to the time window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moesaic.errors import InputError
from moesaic.tasks.search.store import FrameScore

__all__ = ["Span", "VideoScores", "VideoFilter", "split_where", "video_ranges", "typical_score"]

_VIDEO_KEY = re.compile(r"^\s*(video|time)\s*(>=|<=|>|<|=)\s*(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Span:
    video: str
    start: float
    end: float
    score: float  # the best frame's cosine similarity
    time: float  # when the best frame was sampled
    item_id: int  # the best frame's item
    frames: int  # sampled frames merged into the range


@dataclass(frozen=True)
class VideoScores:
    """How one video answered one query: its typical score, its best frame, and the matching ranges."""

    video: str
    duration: float
    typical: float
    best: float
    best_time: float
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class VideoFilter:
    videos: tuple[str, ...] = ()  # paths or file names; empty: every video
    start: float = 0.0
    end: float = float("inf")

    @property
    def active(self) -> bool:
        return bool(self.videos) or self.start > 0.0 or self.end != float("inf")

    def selects(self, path: str) -> bool:
        return not self.videos or any(v in (path, Path(path).name) or str(Path(v).expanduser().resolve()) == path
                                      for v in self.videos)


def _seconds(text: str, item: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise InputError(f"filter {item!r} needs a time in seconds", "write e.g. --where 'time>=10'",
                         param="where") from None
    return value


def split_where(filters: Sequence[str]) -> tuple[list[str], VideoFilter]:
    """Pull the ``video=…`` and ``time…`` filters out of ``--where``; the rest are attribute filters."""
    rest: list[str] = []
    videos: list[str] = []
    start, end = 0.0, float("inf")
    for item in filters:
        m = _VIDEO_KEY.match(item)
        if m is None:
            rest.append(item)
            continue
        key, op, value = m.group(1).lower(), m.group(2), m.group(3)
        if key == "video":
            if op != "=":
                raise InputError(f"filter {item!r}: a video is matched with =", "write --where video=clip.mp4",
                                 param="where")
            videos.append(value)
        elif op in (">=", ">"):
            start = max(start, _seconds(value, item))
        elif op in ("<=", "<"):
            end = min(end, _seconds(value, item))
        else:
            lo, dash, hi = value.partition("-")
            if not dash:
                raise InputError(f"filter {item!r} is not a time window", "write --where time=10-20 or 'time>=10'",
                                 param="where")
            start, end = max(start, _seconds(lo, item)), min(end, _seconds(hi, item))
    if start >= end:
        raise InputError(f"the time filters leave no time (from {start:g}s to {end:g}s)",
                         "make the start earlier than the end", param="where")
    return rest, VideoFilter(tuple(videos), start, end)


def typical_score(scores: np.ndarray, weights: np.ndarray) -> float:
    """The weighted median of ``scores`` (weights: how long each frame is on screen)."""
    order = np.argsort(scores)
    cumulative = np.cumsum(weights[order])
    return float(scores[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _one_video(frames: list[FrameScore], contrast: float, min_score: float, passes: set[int] | None,
               window: VideoFilter) -> VideoScores:
    times = np.array([f.time for f in frames])  # (n,)
    ends = np.append(times[1:], max(frames[0].duration, times[-1]))  # (n,) each sample lasts until the next
    scores = np.array([f.score for f in frames])  # (n,)
    typical = typical_score(scores, np.maximum(ends - times, 1e-3))
    match = (scores - typical >= contrast) & (scores >= min_score)
    if passes is not None:
        match &= np.array([f.item_id in passes for f in frames])
    spans: list[Span] = []
    i = 0
    while i < len(frames):
        if not match[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(frames) and match[j + 1]:
            j += 1
        best = i + int(np.argmax(scores[i:j + 1]))
        start, end = max(float(times[i]), window.start), min(float(ends[j]), window.end)
        if start < end:
            spans.append(Span(frames[0].video, round(start, 3), round(end, 3), float(scores[best]),
                              float(times[best]), frames[best].item_id, j - i + 1))
        i = j + 1
    top = int(np.argmax(scores))
    return VideoScores(frames[0].video, frames[0].duration, round(typical, 6), float(scores[top]), float(times[top]),
                       spans)


def video_ranges(scores: Sequence[FrameScore], *, contrast: float, min_score: float,
                 passes: set[int] | None = None, window: VideoFilter = VideoFilter()) -> list[VideoScores]:
    """Per video (in the order given, frames grouped by video and sorted by time): its matching ranges."""
    out: list[VideoScores] = []
    group: list[FrameScore] = []
    for frame in [*scores, None]:
        if group and (frame is None or frame.video != group[0].video):
            if window.selects(group[0].video):
                out.append(_one_video(group, contrast, min_score, passes, window))
            group = []
        if frame is not None:
            group.append(frame)
    return out
