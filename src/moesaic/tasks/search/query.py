"""``moesaic search "red cotton t-shirt" --db PATH -k 10``: images, and video time ranges, by words or example.

Images are ranked by cosine similarity. Indexed videos answer with time ranges (see :mod:`.ranges`):
consecutive sampled frames that stand out for the query merge into one range scored by its best frame;
ranges and images are ranked together by that score.
"""

from __future__ import annotations

import os
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moesaic.config import CommandConfig
from moesaic.errors import InputError, NotFoundError
from moesaic.tasks.base import open_image
from moesaic.tasks.search.embedders import ImageEmbedder, make_embedder
from moesaic.tasks.search.ranges import VideoFilter, VideoScores, split_where, video_ranges
from moesaic.tasks.search.store import VectorStore, parse_where

__all__ = ["SearchConfig", "SearchHit", "SearchResult", "search", "query_vector", "CONTRAST", "MIN_SCORE",
           "rank_videos", "shown_path"]

# Chosen on a validation video (benchmarks/video_search.py --calibrate), not on the test videos.
CONTRAST = 0.15
MIN_SCORE = 0.56


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (for display only)."""
    if "://" in path or path.startswith("data:"):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return path if rel.startswith("..") else rel


class SearchConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("query",)

    query: str | None = Field(None, description="what to look for, in words")
    image: str | None = Field(None, description="or: find images (and video moments) like this one (path or URL)")
    db: str = Field(description="the index file built by moesaic index")
    k: int = Field(10, ge=1, le=1000, description="how many results")
    where: list[str] = Field(default_factory=list,
                             description="filters key=value (colour=red, type=t-shirt, video=clip.mp4, time>=10)")
    contrast: float = Field(CONTRAST, ge=0.0, le=2.0,
                            description="a video frame matches when it scores this much above its video's typical one")
    min_score: float = Field(MIN_SCORE, ge=-1.0, le=1.0,
                             description="a video frame matches only when it scores at least this")

    @field_validator("where", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [v for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _query_or_image(self) -> "SearchConfig":
        if (self.query is None or not self.query.strip()) and self.image is None:
            raise ValueError("give a text query or --image")
        if self.query and self.image:
            raise ValueError("give either a text query or --image, not both")
        return self


class SearchHit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int
    ref: str = Field(description="the image, or the video")
    score: float = Field(description="cosine similarity (a video range: of its best frame)")
    caption: str
    attrs: dict[str, list[str]]
    extra: dict[str, str] = Field(default_factory=dict)
    kind: Literal["image", "video"] = "image"
    start: float | None = Field(None, description="video range start, seconds")
    end: float | None = Field(None, description="video range end, seconds")
    time: float | None = Field(None, description="when the range's best frame was sampled, seconds")

    def where(self) -> str:
        ref = shown_path(self.ref)
        return ref if self.kind == "image" else f"{ref} [{self.start:.2f}s – {self.end:.2f}s]"


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    db: str
    embedder: str
    hits: list[SearchHit]

    def render(self) -> str:
        if not self.hits:
            return "nothing matches (no image passes the filters, no video moment stands out)"
        return "\n".join(f"{h.rank:3d}. {h.score:.3f}  {h.where()}  {h.caption}" for h in self.hits)


def query_vector(embedder: ImageEmbedder, query: str | None, image: str | None, dim: int) -> np.ndarray:
    """The query's vector (dim,): the text embedded, or the example image described and embedded."""
    if image is not None:
        vector = embedder.describe(open_image(image)).vector  # (dim,)
    else:
        vector = embedder.embed_text([query or ""])[0]  # (dim,)
    if dim != len(vector):
        raise InputError(f"the query vector has {len(vector)} dimensions, the index {dim}",
                         "query with the embedder the index was built with")
    return vector


def rank_videos(store: VectorStore, vector: np.ndarray, attr_where: list[tuple[str, str]], window: VideoFilter,
                contrast: float, min_score: float) -> list[VideoScores]:
    """Every selected indexed video with its matching ranges for ``vector``."""
    frames = store.frame_scores(vector)
    passes = store.matching([f.item_id for f in frames], attr_where) if attr_where else None
    return video_ranges(frames, contrast=contrast, min_score=min_score, passes=passes, window=window)


def search(config: SearchConfig) -> SearchResult:
    """Find indexed images, and moments in indexed videos, by text (or like --image); --where filters."""
    rest, window = split_where(config.where)
    where = parse_where(rest)
    with VectorStore(config.db) as store:
        if store.count() == 0:
            raise NotFoundError(f"the index {config.db} is empty",
                                f"add images or videos: moesaic index FOLDER --db {config.db}")
        meta = store.meta()
        embedder = make_embedder(meta.get("embedder", "starter"))
        vector = query_vector(embedder, config.query, config.image, int(meta.get("dim", embedder.dim)))
        images = [] if window.active else store.query(vector, config.k, where)
        hits = [SearchHit(rank=0, ref=h.ref, score=h.score, caption=h.caption, attrs=h.attrs, extra=h.extra)
                for h in images]
        for video in rank_videos(store, vector, where, window, config.contrast, config.min_score):
            for span in video.spans:
                caption, attrs = store.item(span.item_id)
                hits.append(SearchHit(rank=0, ref=span.video, score=round(span.score, 6), caption=caption, attrs=attrs,
                                      kind="video", start=span.start, end=span.end, time=span.time))
    hits.sort(key=lambda h: -h.score)
    ranked = [h.model_copy(update={"rank": i + 1}) for i, h in enumerate(hits[: config.k])]
    return SearchResult(query=config.query or f"image:{config.image}", db=config.db, embedder=embedder.name,
                        hits=ranked)
