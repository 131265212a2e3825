"""The image index: one SQLite file with the sqlite-vec extension.

Why sqlite-vec: the index is a single file next to the user's images — no server to run, nothing to
deploy, copyable and inspectable with any SQLite tool; writes are transactions, so an interrupted
``moesaic index`` leaves the previous state intact; metadata filters are plain SQL over an attributes
table; and ``vec_distance_cosine`` ranks exactly (brute force), which is fast enough for the tens of
thousands of images a local catalogue holds. Python's bundled ``sqlite3`` may be built without extension
loading, so ``pysqlite3`` (its own recent SQLite) is used when present.

Tables: ``meta(key, value)`` (embedder, dim, moesaic version), ``items(id, ref, mtime_ns, size, sha256,
caption, vector, extra)``, ``attrs(item_id, key, value)``; for videos, ``videos(id, path, mtime_ns, size,
sha256, duration, sampling, complete)`` and ``frames(item_id, video_id, time, width, height)``: a sampled
frame is an item (ref ``PATH#t=SECONDS``) with a row in ``frames``, so images and frames share one vector
space and one query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesaic.errors import ConfigError, InputError, NotFoundError, missing_extra

__all__ = ["VectorStore", "Hit", "Fingerprint", "FrameScore", "VideoRecord", "parse_where"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id INTEGER PRIMARY KEY, ref TEXT UNIQUE NOT NULL, mtime_ns INTEGER, size INTEGER, sha256 TEXT,
  caption TEXT NOT NULL, vector BLOB NOT NULL, extra TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS attrs (item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
  key TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attrs_kv ON attrs(key, value);
CREATE TABLE IF NOT EXISTS videos (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime_ns INTEGER,
  size INTEGER, sha256 TEXT, duration REAL, sampling TEXT NOT NULL, complete INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS frames (item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
  video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE, time REAL NOT NULL,
  width INTEGER NOT NULL, height INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS frames_video_time ON frames(video_id, time);
"""
NOT_A_FRAME = "NOT EXISTS (SELECT 1 FROM frames f WHERE f.item_id = items.id)"
KEY_ALIASES = {"color": "colour", "colors": "colour", "colours": "colour", "tags": "tag"}


@dataclass(frozen=True)
class Fingerprint:
    mtime_ns: int | None
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Hit:
    ref: str
    score: float  # cosine similarity
    caption: str
    attrs: dict[str, list[str]]
    extra: dict[str, str]


@dataclass(frozen=True)
class VideoRecord:
    id: int
    path: str
    fingerprint: Fingerprint
    duration: float | None
    sampling: str  # JSON of the FrameSampling it was indexed with
    complete: bool


@dataclass(frozen=True)
class FrameScore:
    video: str
    duration: float
    item_id: int
    time: float
    score: float  # cosine similarity


def _connect(path: Path) -> Any:
    try:
        import pysqlite3 as sqlite  # type: ignore[import-not-found]
    except ImportError:
        import sqlite3 as sqlite
    try:
        import sqlite_vec
    except ImportError:
        raise missing_extra("sqlite-vec", "tasks") from None
    db = sqlite.connect(str(path), timeout=30)
    if not hasattr(db, "enable_load_extension"):
        raise missing_extra("pysqlite3-binary (this Python's sqlite3 cannot load extensions)", "tasks")
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def parse_where(filters: list[str]) -> list[tuple[str, str]]:
    """["colour=red", "type=t-shirt"] → [("colour", "red"), ("type", "t-shirt")] (keys normalised)."""
    out = []
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise InputError(f"filter {item!r} is not key=value", "write e.g. --where colour=red", param="where")
        key = key.strip().lower()
        out.append((KEY_ALIASES.get(key, key), value.strip().lower()))
    return out


class VectorStore:
    """An image index in one SQLite file. Use as a context manager; writes go through :meth:`transaction`."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise NotFoundError(f"no index at {self.path}", "build one first: moesaic index FOLDER --db " + str(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = _connect(self.path)
        self.db.executescript(SCHEMA)

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def bind(self, embedder: str, dim: int) -> None:
        """Record the embedder on first use; refuse to mix embedders in one index."""
        meta = self.meta()
        if meta and (meta.get("embedder") != embedder or int(meta.get("dim", -1)) != dim):
            raise ConfigError(
                f"{self.path} was built with embedder {meta.get('embedder')} ({meta.get('dim')}-d), not {embedder} ({dim}-d)",
                "use the same --embedder, or a new --db file",
                param="embedder",
            )
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("embedder", embedder), ("dim", str(dim))])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])

    def counts(self) -> tuple[int, int, int]:
        """(images, indexed videos, their sampled frames)."""
        all_frames = int(self.db.execute("SELECT count(*) FROM frames").fetchone()[0])
        videos, frames = self.db.execute("SELECT count(DISTINCT v.id), count(f.item_id) FROM videos v "
                                         "LEFT JOIN frames f ON f.video_id = v.id WHERE v.complete = 1").fetchone()
        return self.count() - all_frames, int(videos), int(frames)

    def fingerprint(self, ref: str) -> Fingerprint | None:
        row = self.db.execute("SELECT mtime_ns, size, sha256 FROM items WHERE ref = ?", (ref,)).fetchone()
        return Fingerprint(*row) if row else None

    def touch(self, ref: str, fp: Fingerprint) -> None:
        self.db.execute("UPDATE items SET mtime_ns = ?, size = ? WHERE ref = ?", (fp.mtime_ns, fp.size, ref))

    def upsert(self, ref: str, fp: Fingerprint, caption: str, vector: np.ndarray,
               attrs: dict[str, list[str]], extra: dict[str, str]) -> None:
        """Insert or replace one image (call inside ``with store.db:`` to batch into a transaction)."""
        import sqlite_vec

        blob = sqlite_vec.serialize_float32(np.asarray(vector, dtype=np.float32).tolist())
        self.db.execute("DELETE FROM items WHERE ref = ?", (ref,))
        cur = self.db.execute(
            "INSERT INTO items (ref, mtime_ns, size, sha256, caption, vector, extra) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ref, fp.mtime_ns, fp.size, fp.sha256, caption, blob, json.dumps(extra)),
        )
        rows = [(cur.lastrowid, key, v.lower()) for key, values in attrs.items() for v in values]
        rows += [(cur.lastrowid, key.lower(), v.lower()) for key, v in extra.items()]
        self.db.executemany("INSERT INTO attrs VALUES (?, ?, ?)", rows)

    def remove_missing(self, keep: set[str]) -> int:
        """Drop the images (not video frames) whose ref is not in ``keep``; how many went."""
        refs = self.db.execute(f"SELECT ref FROM items WHERE {NOT_A_FRAME}").fetchall()
        gone = [r for (r,) in refs if r not in keep]
        self.db.executemany("DELETE FROM items WHERE ref = ?", [(r,) for r in gone])
        return len(gone)

    # videos ---------------------------------------------------------------------------------------------
    def video(self, path: str) -> VideoRecord | None:
        row = self.db.execute("SELECT id, path, mtime_ns, size, sha256, duration, sampling, complete FROM videos "
                              "WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        return VideoRecord(row[0], row[1], Fingerprint(row[2], row[3], row[4]), row[5], row[6], bool(row[7]))

    def videos(self) -> list[str]:
        return [p for (p,) in self.db.execute("SELECT path FROM videos ORDER BY path")]

    def touch_video(self, path: str, fp: Fingerprint) -> None:
        self.db.execute("UPDATE videos SET mtime_ns = ?, size = ? WHERE path = ?", (fp.mtime_ns, fp.size, path))

    def remove_video(self, path: str) -> None:
        """Drop a video and its frames (call inside a transaction)."""
        self.db.execute("DELETE FROM items WHERE id IN (SELECT f.item_id FROM frames f JOIN videos v ON "
                        "v.id = f.video_id WHERE v.path = ?)", (path,))
        self.db.execute("DELETE FROM videos WHERE path = ?", (path,))

    def begin_video(self, path: str, fp: Fingerprint, sampling: str) -> int:
        """Replace any earlier index of ``path`` with an empty, incomplete one; its id."""
        self.remove_video(path)
        cur = self.db.execute("INSERT INTO videos (path, mtime_ns, size, sha256, sampling) VALUES (?, ?, ?, ?, ?)",
                              (path, fp.mtime_ns, fp.size, fp.sha256, sampling))
        return int(cur.lastrowid)

    def add_frame(self, video_id: int, path: str, time: float, size: tuple[int, int], caption: str,
                  vector: np.ndarray, attrs: dict[str, list[str]]) -> None:
        """One sampled frame of a video begun with :meth:`begin_video`."""
        ref = f"{path}#t={time:.3f}"
        self.upsert(ref, Fingerprint(None, None, None), caption, vector, attrs, {})
        item_id = self.db.execute("SELECT id FROM items WHERE ref = ?", (ref,)).fetchone()[0]
        self.db.execute("INSERT INTO frames VALUES (?, ?, ?, ?, ?)", (item_id, video_id, time, size[0], size[1]))

    def finish_video(self, video_id: int, duration: float) -> None:
        self.db.execute("UPDATE videos SET duration = ?, complete = 1 WHERE id = ?", (duration, video_id))

    def frame_scores(self, vector: np.ndarray, videos: Sequence[str] | None = None) -> list[FrameScore]:
        """Every sampled frame of the complete videos (of ``videos`` when given) with its cosine similarity
        to ``vector``, ordered by video and time."""
        import sqlite_vec

        sql = ("SELECT v.path, v.duration, f.item_id, f.time, vec_distance_cosine(i.vector, ?) FROM frames f "
               "JOIN videos v ON v.id = f.video_id JOIN items i ON i.id = f.item_id WHERE v.complete = 1")
        params: list[Any] = [sqlite_vec.serialize_float32(np.asarray(vector, dtype=np.float32).tolist())]
        if videos is not None:
            sql += f" AND v.path IN ({', '.join('?' * len(videos))})"
            params += list(videos)
        sql += " ORDER BY v.path, f.time"
        return [FrameScore(p, float(dur), int(item), float(t), round(1.0 - float(1.0 if d is None else d), 6))
                for p, dur, item, t, d in self.db.execute(sql, params).fetchall()]  # d is NULL for a zero vector

    def matching(self, item_ids: Sequence[int], where: Sequence[tuple[str, str]]) -> set[int]:
        """The ids among ``item_ids`` that pass every attribute filter."""
        if not where:
            return set(item_ids)
        clauses = " AND ".join(["EXISTS (SELECT 1 FROM attrs a WHERE a.item_id = items.id AND a.key = ? "
                                "AND a.value = ?)"] * len(where))
        rows = self.db.execute(f"SELECT id FROM items WHERE {clauses}", [x for pair in where for x in pair])
        return {i for (i,) in rows} & set(item_ids)

    def item(self, item_id: int) -> tuple[str, dict[str, list[str]]]:
        """(caption, attributes) of one item."""
        caption = self.db.execute("SELECT caption FROM items WHERE id = ?", (item_id,)).fetchone()[0]
        return caption, self._attrs(item_id)

    def _attrs(self, item_id: int) -> dict[str, list[str]]:
        attrs: dict[str, list[str]] = {}
        for key, value in self.db.execute("SELECT key, value FROM attrs WHERE item_id = ?", (item_id,)):
            attrs.setdefault(key, []).append(value)
        return attrs

    def query(self, vector: np.ndarray, k: int, where: Sequence[tuple[str, str]] = ()) -> list[Hit]:
        """The ``k`` nearest images (not video frames) by cosine similarity among those matching every filter."""
        import sqlite_vec

        if self.count() == 0:
            raise NotFoundError(f"the index {self.path} is empty", "add images with: moesaic index FOLDER --db " + str(self.path))
        sql = "SELECT id, ref, caption, extra, vec_distance_cosine(vector, ?) AS d FROM items"
        clauses = ["EXISTS (SELECT 1 FROM attrs a WHERE a.item_id = items.id AND a.key = ? AND a.value = ?)"] * len(where)
        sql += " WHERE " + " AND ".join([NOT_A_FRAME, *clauses])
        sql += " ORDER BY d LIMIT ?"
        params: list[Any] = [sqlite_vec.serialize_float32(np.asarray(vector, dtype=np.float32).tolist())]
        params += [x for pair in where for x in pair] + [k]
        hits = []
        for item_id, ref, caption, extra, dist in self.db.execute(sql, params).fetchall():
            hits.append(Hit(ref, round(1.0 - float(dist), 6), caption, self._attrs(item_id), json.loads(extra)))
        return hits
