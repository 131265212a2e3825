"""Which frames of a video get indexed: a floor rate everywhere, more where the picture changes.

Every decoded frame is shrunk to a 32×32 thumbnail and compared with the thumbnail of the last *sampled*
frame; when more than ``change`` of its pixels moved by more than :data:`PIXEL_STEP` (on a 0–1 scale, the
largest channel), the frame is sampled at once (at most ``2 × dense_fps`` a second) and the next
``dense_seconds`` are sampled at ``dense_fps``. Otherwise one frame every ``1 / floor_fps`` seconds is
sampled. A frame within half a frame period of its due time counts as due, so a 10 fps video sampled at
4 fps gets a frame every 0.2 s, never every 0.3 s. Because a frame is taken as soon as the picture differs
from the last sample, each sample stands for the time until the next one: the span a search hit covers.

Sampled frames are scaled by the decoder (swscale) to at most ``max_side`` pixels; no full-resolution
picture is kept, and frames stream out one at a time, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from moesaic.config import FrozenModel
from moesaic.errors import InputError
from moesaic.tasks.video import open_video, reduced_size

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["FrameSampling", "SampledFrame", "VideoInfo", "video_info", "sample_frames", "frame_at", "changed_share",
           "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"})
THUMB = 32
PIXEL_STEP = 0.1  # a thumbnail pixel "changed" when a channel moved by more than this (0–1 scale)


class FrameSampling(FrozenModel):
    """How frames are picked and sized (stored with each indexed video; a change re-indexes it)."""

    floor_fps: float = Field(1.0, gt=0.0, le=30.0, description="frames sampled per second everywhere")
    dense_fps: float = Field(4.0, gt=0.0, le=30.0, description="frames per second for a while after a change")
    dense_seconds: float = Field(1.0, ge=0.0, le=60.0, description="how long dense sampling lasts after a change")
    change: float = Field(0.02, gt=0.0, le=1.0, description="share of the picture that must change to sample")
    max_side: int = Field(448, ge=32, le=4096, description="sampled frames are scaled to at most this many pixels")


@dataclass(frozen=True)
class SampledFrame:
    time: float  # seconds from the start
    image: "Image.Image"  # at most max_side pixels on its longer side
    reason: Literal["first", "change", "dense", "floor"]


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float | None  # as the container declares it
    frames: int | None  # as the container declares it


def video_info(path: str | Path) -> VideoInfo:
    with open_video(Path(path)) as container:
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        return VideoInfo(int(stream.codec_context.width), int(stream.codec_context.height),
                         float(stream.average_rate or 0) or 25.0, duration, int(stream.frames) or None)


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of thumbnail pixels whose largest channel difference exceeds :data:`PIXEL_STEP`, 0 to 1."""
    return float((np.abs(a - b).max(axis=2) > PIXEL_STEP).mean())  # a, b: (32, 32, 3)


def _thumb(raw: Any) -> np.ndarray:
    return raw.reformat(width=THUMB, height=THUMB, format="rgb24").to_ndarray().astype(np.float32) / 255.0


def _decoded(path: Path, container: Any) -> Iterator[Any]:
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path} could not be decoded ({exc})", "re-encode it, e.g. with ffmpeg -c:v libx264") from None


def sample_frames(path: str | Path, sampling: FrameSampling | None = None) -> Iterator[SampledFrame]:
    """Stream the sampled frames of the first video stream, in time order, at reduced size."""
    sampling = sampling or FrameSampling()
    path = Path(path)
    last_t, last_thumb, dense_until = -1.0, None, -1.0
    with open_video(path) as container:
        # a frame within half a frame period of its due time is taken: the rates are met, not undershot
        eps = 0.5 / (float(container.streams.video[0].average_rate or 0) or 25.0) + 1e-6
        for raw in _decoded(path, container):
            t = float(raw.time or 0.0)
            thumb = _thumb(raw)  # (32, 32, 3)
            gap = t - last_t
            reason: Literal["first", "change", "dense", "floor"] | None = None
            if last_thumb is None:
                reason = "first"
            elif gap >= 0.5 / sampling.dense_fps - eps and changed_share(last_thumb, thumb) >= sampling.change:
                reason = "change"
                dense_until = t + sampling.dense_seconds
            elif t < dense_until and gap >= 1.0 / sampling.dense_fps - eps:
                reason = "dense"
            elif gap >= 1.0 / sampling.floor_fps - eps:
                reason = "floor"
            if reason is None:
                continue
            width, height = reduced_size(raw.width, raw.height, sampling.max_side)
            image = raw.reformat(width=width, height=height, format="rgb24").to_image()
            last_t, last_thumb = t, thumb
            yield SampledFrame(round(t, 3), image, reason)


def frame_at(path: str | Path, time: float, max_side: int = 448) -> "Image.Image":
    """The frame shown at ``time`` seconds (the last one starting at or before it), at reduced size."""
    path = Path(path)
    with open_video(path) as container:
        stream = container.streams.video[0]
        if stream.time_base is not None and time > 0:
            container.seek(int(max(0.0, time - 0.001) / stream.time_base), stream=stream, backward=True)
        shown = None
        for raw in _decoded(path, container):
            if shown is not None and float(raw.time or 0.0) > time + 1e-6:
                break
            shown = raw
        if shown is None:
            raise InputError(f"{path} has no frame at {time:.3f}s", "pass a time inside the video")
        width, height = reduced_size(shown.width, shown.height, max_side)
        return shown.reformat(width=width, height=height, format="rgb24").to_image()  # type: ignore[no-any-return]
