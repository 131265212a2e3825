"""``moesaic find VIDEO "a red ball"``: when does something appear in a video? Time ranges, best first.

The video is indexed on the fly into a cached index (``--db``, by default one file per embedder under
``$MOESAIC_CACHE_DIR``, ``$XDG_CACHE_HOME/moesaic`` or ``~/.cache/moesaic``), so asking again is only a
query; a changed video is indexed again. Ranges come from :mod:`.ranges`: a query for something absent
lifts no frame above the video's typical score and returns no range. ``--verify`` shows the best frame of
each of the top ``--verify-top`` ranges to a model (a VLM, or the starter experts) with a yes/no question
and re-ranks: confirmed ranges first, denied ones last.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moesaic.config import CommandConfig
from moesaic.errors import InputError
from moesaic.tasks.base import STARTER, is_starter, prompt_backend
from moesaic.tasks.search.embedders import make_embedder
from moesaic.tasks.search.frames import FrameSampling, frame_at
from moesaic.tasks.search.query import CONTRAST, MIN_SCORE, query_vector, shown_path
from moesaic.tasks.search.ranges import video_ranges
from moesaic.tasks.search.store import VectorStore
from moesaic.tasks.search.video_index import index_video, is_video
from moesaic.tasks.sources import IMAGE_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.backends.base import Backend

__all__ = ["FindConfig", "FindResult", "FoundRange", "find", "run_find", "cache_db", "verify_question", "yes_or_no"]

log = logging.getLogger(__name__)


class FindConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("video", "query")

    video: str = Field(description="the video to search (mp4, webm, mkv, …)")
    query: str | None = Field(None, description="what to look for, in words")
    image: str | None = Field(None, description="or: an example image of what to look for")
    db: str | None = Field(None, description="the index to keep the video's frames in (default: a cached one)")
    embedder: str = Field("starter", description="'starter' (offline captions + MiniLM) or 'clip:<model>'")
    ocr: bool = Field(True, description="read text in frames into the caption (starter embedder)")
    sampling: FrameSampling = Field(default_factory=FrameSampling,
                                    description="which frames are indexed (--sampling.floor_fps 2, …)")
    k: int = Field(5, ge=1, le=1000, description="how many ranges")
    contrast: float = Field(CONTRAST, ge=0.0, le=2.0,
                            description="a frame matches when it scores this much above the video's typical frame")
    min_score: float = Field(MIN_SCORE, ge=-1.0, le=1.0, description="a frame matches only when it scores at least this")
    verify: bool = Field(False, description="ask a model yes/no about the top ranges' best frames and re-rank")
    verify_top: int = Field(3, ge=1, le=100, description="how many ranges --verify asks about")
    model: str = Field(STARTER, description="--verify: 'starter', a hub id or a local VLM folder")
    backend: str | None = Field(None, description="--verify: force a backend by name")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="--verify: tokens a VLM may generate")

    @model_validator(mode="after")
    def _query_or_image(self) -> "FindConfig":
        if (self.query is None or not self.query.strip()) and self.image is None:
            raise ValueError("give a text query or --image")
        if self.query and self.image:
            raise ValueError("give either a text query or --image, not both")
        if self.verify and not self.query:
            raise ValueError("--verify asks about a text query; give one instead of --image")
        return self


class FoundRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    score: float = Field(description="cosine similarity of the best frame")
    time: float = Field(description="when the best frame was sampled, seconds")
    frames: int = Field(description="sampled frames in the range")
    caption: str = Field(description="the best frame's caption (starter embedder)")
    verified: bool | None = Field(None, description="--verify: the model's yes (true) or no (false)")
    answer: str | None = Field(None, description="--verify: what the model said")


class FindResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video: str
    query: str
    db: str
    indexed_now: bool = Field(description="the video was (re)indexed by this call, not read from the cache")
    duration: float
    typical: float = Field(description="the video's typical (time-weighted median) frame score for the query")
    best: float = Field(description="the best frame's score")
    best_time: float
    ranges: list[FoundRange]

    def render(self) -> str:
        if not self.ranges:
            return (f"{self.query!r} is not in {shown_path(self.video)}: no moment stands out (best frame {self.best:.3f} at "
                    f"{self.best_time:.2f}s, typical {self.typical:.3f})")
        rows = []
        for r in self.ranges:
            check = "" if r.verified is None else ("  yes" if r.verified else "  no")
            rows.append(f"[{r.start:7.2f}s – {r.end:7.2f}s]  {r.score:.3f}{check}  {r.caption}")
        return "\n".join(rows)


def cache_db(embedder: str, ocr: bool) -> Path:
    """The default index of ``find``: one file per embedder (and OCR setting) in the user's cache."""
    root = os.environ.get("MOESAIC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "moesaic")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder).strip("_")
    return Path(root) / "video-index" / f"{slug}{'-ocr' if ocr else ''}.db"


def verify_question(query: str) -> str:
    """"a red ball" → "Is there a red ball?" (the starter experts read this form; VLMs answer it too)."""
    thing = query.strip().rstrip("?.!")
    if not re.match(r"(?i)(a|an|any|some|the)\s", thing):
        thing = ("an " if thing[:1].lower() in "aeiou" else "a ") + thing
    return f"Is there {thing}?"


def yes_or_no(answer: str) -> bool | None:
    """True for a yes, False for a no ("No", "I don't see …"), None when the answer is neither."""
    text = answer.strip().lower()
    if re.match(r"yes\b", text):
        return True
    if re.match(r"(no\b|i don't see|i do not see|there is no|there are no)", text):
        return False
    return None


def _verify(config: FindConfig, backend: "Backend", path: Path, ranges: list[FoundRange]) -> list[FoundRange]:
    question = verify_question(config.query or "")
    if not is_starter(backend):
        question += " Answer yes or no."
    checked = []
    for i, found in enumerate(ranges):
        if i < config.verify_top:
            image = frame_at(path, found.time, config.sampling.max_side)
            answer = prompt_backend(backend, [image], question, config.max_new_tokens).text.strip()
            found = found.model_copy(update={"verified": yes_or_no(answer), "answer": answer})
        checked.append(found)
    order = {True: 0, None: 1, False: 2}
    return sorted(checked, key=lambda r: (order[r.verified], -r.score))


def _video_path(config: FindConfig) -> Path:
    path = Path(config.video).expanduser()
    if not path.is_file():
        raise InputError(f"video {path} does not exist", "check the path", param="video")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path} is an image, not a video",
                         "to search images, index them (moesaic index FOLDER --db DB) and use moesaic search",
                         param="video")
    if not is_video(path):
        log.info("%s has no usual video suffix; trying to decode it anyway", path)
    return path.resolve()


def find(config: FindConfig) -> FindResult:
    """Find when something (words or an example image) appears in a video: time ranges, best first."""
    return run_find(config)


def run_find(config: FindConfig, backend: "Backend | None" = None) -> FindResult:
    """:func:`find` with the verifying backend already loaded (``--verify`` loads ``--model`` otherwise)."""
    path = _video_path(config)
    db = Path(config.db) if config.db else cache_db(config.embedder, config.ocr)
    embedder = make_embedder(config.embedder, ocr=config.ocr)
    with VectorStore(db, create=True) as store:
        store.bind(embedder.name, embedder.dim)
        outcome = index_video(store, embedder, path, config.sampling)
        vector = query_vector(embedder, config.query, config.image, embedder.dim)
        (scores,) = video_ranges(store.frame_scores(vector, [str(path)]), contrast=config.contrast,
                                 min_score=config.min_score)
        spans = sorted(scores.spans, key=lambda s: -s.score)[: config.k]
        ranges = [FoundRange(start=s.start, end=s.end, score=round(s.score, 6), time=s.time, frames=s.frames,
                             caption=store.item(s.item_id)[0]) for s in spans]
    if config.verify and ranges:
        if backend is None:  # loaded only when there is something to verify
            from moesaic.backends.registry import load_backend

            backend = load_backend(config.model, backend=config.backend)
        ranges = _verify(config, backend, path, ranges)
    return FindResult(video=str(path), query=config.query or f"image:{config.image}", db=str(db),
                      indexed_now=outcome.action in ("new", "changed"), duration=round(scores.duration, 3),
                      typical=scores.typical, best=round(scores.best, 6), best_time=scores.best_time, ranges=ranges)
