"""``moesaic video FILE "QUESTION"``: answer about a video clip by clip, with timestamps.

Frames are decoded with PyAV and cut into clips either uniformly (``--sampling uniform --clips N``) or at
scene changes (``--sampling scene``: a cut where the mean absolute difference between consecutive 32×32
RGB thumbnails exceeds ``--scene-threshold``, on a 0–1 scale). Each clip is answered from its sampled
frames; the clip answers are then chained into a final answer — by the VLM (a text turn listing the
timestamped clip answers) or, on the starter experts, by merging consecutive clips that agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from moesaic.config import CommandConfig
from moesaic.errors import InputError, missing_extra
from moesaic.progress import progress
from moesaic.tasks.base import STARTER, is_starter, open_backend, prompt_backend

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["VideoConfig", "VideoResult", "ClipAnswer", "Frame", "decode_frames", "open_video", "probe_duration",
           "reduced_size", "split_clips", "video", "run_video", "timeline", "chain_prompt"]

log = logging.getLogger(__name__)
THUMB = 32


class VideoConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("file", "question")

    file: str = Field(description="a video file PyAV can decode (mp4, webm, mkv, …)")
    question: str = Field(min_length=1, description="what to ask about each clip")
    model: str = Field(STARTER, description="'starter', a hub id or a local VLM folder")
    backend: str | None = None
    sampling: Literal["uniform", "scene"] = Field("uniform", description="equal clips, or cut at scene changes")
    clips: int = Field(4, ge=1, le=256, description="number of clips (uniform sampling)")
    scene_threshold: float = Field(0.15, gt=0.0, le=1.0, description="frame difference that starts a new scene")
    frames_per_clip: int = Field(1, ge=1, le=16, description="frames shown to the model per clip")
    max_frames: int = Field(100_000, ge=1, description="decode at most this many frames")
    keep_fps: float = Field(4.0, gt=0.0, le=60.0, description="full frames kept per second (plus one per scene cut)")
    max_side: int = Field(768, ge=32, le=8192, description="kept frames are scaled to at most this many pixels")
    max_new_tokens: int = Field(64, ge=1, le=4096)


class ClipAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    frames: list[float] = Field(description="timestamps of the frames shown")
    answer: str


class VideoResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    question: str
    model: str
    duration: float
    sampling: str
    clips: list[ClipAnswer]
    answer: str

    def render(self) -> str:
        rows = [f"[{c.start:6.2f}s – {c.end:6.2f}s] {c.answer}" for c in self.clips]
        return "\n".join([*rows, "", self.answer])


@dataclass(frozen=True)
class Frame:
    time: float
    thumb: np.ndarray  # (32, 32, 3) float32 RGB in [0, 1]
    image: "Image.Image | None" = None  # kept only at the sampling rate and at scene cuts, at most max_side pixels


def open_video(path: Path) -> Any:
    """The PyAV container of a readable video with a video stream (close it, or use it in ``with``)."""
    try:
        import av
    except ImportError:
        raise missing_extra("av", "tasks") from None
    if not path.is_file():
        raise InputError(f"video {path} does not exist", "check the path")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable video ({exc})", "pass an mp4, webm or mkv file") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream", "pass a file with video frames")
    return container


def reduced_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side`` (never enlarged); even, as swscale prefers."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def decode_frames(
    path: str | Path, max_frames: int = 100_000, *, keep_fps: float = 4.0, scene_threshold: float = 0.15,
    max_side: int = 768,
) -> tuple[list[Frame], float]:
    """Decode the first video stream: a thumbnail and timestamp for every frame, the picture (scaled by the
    decoder to at most ``max_side`` pixels) for ``keep_fps`` frames per second and for the first frame after
    each scene cut; and the duration."""
    path = Path(path)
    frames: list[Frame] = []
    next_keep = 0.0
    with open_video(path) as container:
        import av

        stream = container.streams.video[0]
        try:
            for raw in container.decode(stream):
                t = float(raw.time or 0.0)
                thumb = raw.reformat(width=THUMB, height=THUMB, format="rgb24").to_ndarray()
                thumb = thumb.astype(np.float32) / 255.0  # (32, 32, 3)
                cut = bool(frames) and _difference(frames[-1].thumb, thumb) > scene_threshold
                keep = t >= next_keep or cut
                if t >= next_keep:
                    next_keep = t + 1.0 / keep_fps
                image = None
                if keep:
                    width, height = reduced_size(raw.width, raw.height, max_side)
                    image = raw.reformat(width=width, height=height, format="rgb24").to_image()
                frames.append(Frame(t, thumb, image))
                if len(frames) >= max_frames:
                    log.warning("%s: stopped after %d frames (max_frames)", path, max_frames)
                    break
        except av.error.FFmpegError as exc:
            raise InputError(f"{path} could not be decoded ({exc})", "re-encode it, e.g. with ffmpeg -c:v libx264") from None
        rate = float(stream.average_rate or 0) or 25.0
    if not frames:
        raise InputError(f"{path} holds no decodable frames", "pass a video with at least one frame")
    return frames, frames[-1].time + 1.0 / rate


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, 0 (same) to 1."""
    return float(np.abs(a - b).mean())


def split_clips(frames: list[Frame], duration: float, sampling: str, clips: int, threshold: float) -> list[tuple[float, float, list[Frame]]]:
    """(start, end, frames) per clip, in order."""
    if sampling == "scene":
        cuts = [0] + [i for i in range(1, len(frames)) if _difference(frames[i - 1].thumb, frames[i].thumb) > threshold]
        bounds = list(zip(cuts, cuts[1:] + [len(frames)]))
        return [(frames[a].time, frames[b].time if b < len(frames) else duration, frames[a:b]) for a, b in bounds]
    edges = np.linspace(0.0, duration, clips + 1)
    out = []
    for start, end in zip(edges[:-1], edges[1:]):
        inside = [f for f in frames if start <= f.time < end]
        if inside:
            out.append((float(start), float(end), inside))
    return out


def _pick(frames: list[Frame], n: int) -> list[Frame]:
    """``n`` kept frames spread over the clip (the middle one when n == 1)."""
    frames = [f for f in frames if f.image is not None]
    if not frames:
        return []
    if n >= len(frames):
        return frames
    idx = np.linspace(0, len(frames) - 1, n + 2)[1:-1] if n > 1 else [len(frames) // 2]
    return [frames[int(round(i))] for i in idx]


def _nearest_kept(frames: list[Frame], t: float) -> list[Frame]:
    """The kept frame closest to ``t`` (for clips shorter than the keep interval)."""
    kept = [f for f in frames if f.image is not None]
    return [min(kept, key=lambda f: abs(f.time - t))]


def timeline(clips: list[ClipAnswer]) -> str:
    """"0.0–1.0s: red; 1.0–2.5s: green" — consecutive clips with the same answer merged."""
    merged: list[list[Any]] = []  # [start, end, answer]
    for c in clips:
        if merged and merged[-1][2].strip().lower() == c.answer.strip().lower():
            merged[-1][1] = c.end
        else:
            merged.append([c.start, c.end, c.answer])
    return "; ".join(f"{s:.1f}–{e:.1f}s: {a.strip().rstrip('.')}" for s, e, a in merged)


def chain_prompt(question: str, clips: list[ClipAnswer]) -> str:
    """The text turn that asks a VLM to combine the clip answers."""
    return (f"A video was answered clip by clip for the question: {question}\n" + timeline(clips) +
            "\nCombine these into one answer to the question for the whole video, mentioning the times.")


def _chain(backend: "Backend | None", question: str, clips: list[ClipAnswer], max_new_tokens: int) -> str:
    if is_starter(backend):
        return timeline(clips)
    assert backend is not None
    return prompt_backend(backend, [], chain_prompt(question, clips), max_new_tokens).text.strip()


def probe_duration(path: str | Path) -> float | None:
    """The duration the container declares, in seconds (None when it declares none)."""
    with open_video(Path(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1_000_000 if container.duration else None


def _decode(config: VideoConfig) -> tuple[list[Frame], float]:
    keep_fps = config.keep_fps
    if config.sampling == "uniform":  # keep enough full frames that every clip has its own
        declared = probe_duration(config.file)
        if declared:
            keep_fps = min(60.0, max(keep_fps, (config.frames_per_clip + 1) * config.clips / declared))
    return decode_frames(config.file, config.max_frames, keep_fps=keep_fps, scene_threshold=config.scene_threshold,
                         max_side=config.max_side)


def video(config: VideoConfig) -> VideoResult:
    """Answer a question about a video clip by clip (timestamps), then for the whole video."""
    from moesaic.backends.registry import load_backend

    frames, duration = _decode(config)  # decode before loading a model
    backend = open_backend(config.model, config.backend) or load_backend(STARTER)
    return run_video(config, backend, frames, duration)


def run_video(config: VideoConfig, backend: "Backend", frames: list[Frame] | None = None,
              duration: float | None = None) -> VideoResult:
    """:func:`video` with a backend already loaded (and optionally the frames already decoded)."""
    if frames is None or duration is None:
        frames, duration = _decode(config)
    segments = split_clips(frames, duration, config.sampling, config.clips, config.scene_threshold)
    per_clip = config.frames_per_clip
    if backend.max_images is not None:
        per_clip = max(1, min(per_clip, backend.max_images))
    answers = []
    for start, end, clip in progress(segments, desc="clips", total=len(segments), unit="clip"):
        shown = _pick(clip, per_clip) or _nearest_kept(frames, (start + end) / 2)
        reply = prompt_backend(backend, [f.image for f in shown], config.question, config.max_new_tokens)
        answers.append(ClipAnswer(start=round(start, 3), end=round(end, 3), frames=[round(f.time, 3) for f in shown],
                                  answer=reply.text.strip()))
    final = _chain(backend, config.question, answers, config.max_new_tokens)
    log.info("video %s: %d frames, %d clips", config.file, len(frames), len(answers))
    return VideoResult(file=config.file, question=config.question, model=config.model, duration=round(duration, 3),
                       sampling=config.sampling, clips=answers, answer=final)
