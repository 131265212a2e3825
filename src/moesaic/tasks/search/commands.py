"""``moesaic index FOLDER|CSV|JSONL --db PATH`` and ``moesaic search "red cotton t-shirt" --db PATH -k 10``.

Indexing is incremental: a local file whose mtime and size match the index is skipped without reading
it; one whose mtime or size changed but whose SHA-256 did not only gets its fingerprint refreshed; remote
references already indexed are skipped. Each batch of images is written in one SQLite transaction, so an
interrupted run keeps everything committed before it. The resolved config is saved next to the index.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moesaic.config import CommandConfig
from moesaic.errors import InputError
from moesaic.progress import progress
from moesaic.tasks.base import open_image
from moesaic.tasks.search.embedders import make_embedder
from moesaic.tasks.search.store import Fingerprint, Hit, VectorStore, parse_where
from moesaic.tasks.sources import ImageRow, list_images

__all__ = ["IndexConfig", "IndexResult", "SearchConfig", "SearchResult", "SearchHit", "index", "search"]

log = logging.getLogger(__name__)
COMMIT_EVERY = 16


class IndexConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("source",)

    source: str = Field(description="a folder of images, a CSV or a JSONL file naming images")
    db: str = Field(description="the index file (SQLite), created when missing")
    embedder: str = Field("starter", description="'starter' (offline captions + MiniLM) or 'clip:<model>'")
    ocr: bool = Field(True, description="read text in images into the caption (starter embedder)")
    prune: bool = Field(False, description="drop indexed images that the source no longer lists")


class IndexResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: str
    embedder: str
    dim: int
    added: int
    updated: int
    skipped: int
    removed: int
    total: int
    failed: list[str] = Field(default_factory=list, description="images that could not be read, with why")

    def render(self) -> str:
        text = (f"{self.db}: {self.added} added, {self.updated} re-embedded, {self.skipped} unchanged, "
                f"{self.removed} removed; {self.total} images ({self.embedder}, {self.dim}-d)")
        return "\n".join([text, *(f"failed: {f}" for f in self.failed)])


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


def index(config: IndexConfig) -> IndexResult:
    """Index images (folder, CSV or JSONL) for text search; unchanged files are skipped."""
    rows = list_images(config.source)
    embedder = make_embedder(config.embedder, ocr=config.ocr)
    counts = {"new": 0, "changed": 0, "skip": 0, "touch": 0}
    failed: list[str] = []
    with VectorStore(config.db, create=True) as store:
        store.bind(embedder.name, embedder.dim)
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
        removed = store.remove_missing({r.ref for r in rows}) if config.prune else 0
        store.db.commit()
        total = store.count()
    config.save(Path(config.db).parent, name=Path(config.db).name + ".config.yaml")
    log.info("indexed %s: %s", config.source, counts)
    return IndexResult(db=config.db, embedder=embedder.name, dim=embedder.dim, added=counts["new"],
                       updated=counts["changed"], skipped=counts["skip"] + counts["touch"], removed=removed,
                       total=total, failed=failed)


class SearchConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("query",)

    query: str | None = Field(None, description="what to look for, in words")
    image: str | None = Field(None, description="or: find images like this one (path or URL)")
    db: str = Field(description="the index file built by moesaic index")
    k: int = Field(10, ge=1, le=1000, description="how many results")
    where: list[str] = Field(default_factory=list, description="filters key=value (colour=red, type=t-shirt)")

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
    ref: str
    score: float
    caption: str
    attrs: dict[str, list[str]]
    extra: dict[str, str] = Field(default_factory=dict)


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    db: str
    embedder: str
    hits: list[SearchHit]

    def render(self) -> str:
        if not self.hits:
            return "no image matches the filters"
        return "\n".join(f"{h.rank:3d}. {h.score:.3f}  {h.ref}  {h.caption}" for h in self.hits)


def search(config: SearchConfig) -> SearchResult:
    """Find indexed images by text (or like --image); --where filters on attributes (colour=red)."""
    where = parse_where(config.where)
    with VectorStore(config.db) as store:
        meta = store.meta()
        embedder = make_embedder(meta.get("embedder", "starter"))
        if config.image is not None:
            vector = embedder.describe(open_image(config.image)).vector  # (dim,)
        else:
            vector = embedder.embed_text([config.query or ""])[0]  # (dim,)
        if int(meta.get("dim", len(vector))) != len(vector):
            raise InputError(f"the query vector has {len(vector)} dimensions, the index {meta.get('dim')}",
                             "query with the embedder the index was built with")
        hits: list[Hit] = store.query(vector, config.k, where)
    return SearchResult(query=config.query or f"image:{config.image}", db=config.db, embedder=embedder.name, hits=[
        SearchHit(rank=i + 1, ref=h.ref, score=h.score, caption=h.caption, attrs=h.attrs, extra=h.extra)
        for i, h in enumerate(hits)
    ])
