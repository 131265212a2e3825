"""Video frames in the search index, with a fast colour embedder: sampling, ranges, filters, re-indexing, verify.

The starter embedder on the same generated needle video is in test_tasks_video_search.py (slow).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from moesaic.errors import ConfigError, InputError
from moesaic.tasks.samples import draw_product, save_products, write_needle_video
from moesaic.tasks.search import (
    FindConfig,
    FrameSampling,
    IndexConfig,
    SearchConfig,
    VectorStore,
    index,
    sample_frames,
    search,
)
from moesaic.tasks.search import commands, query
from moesaic.tasks.search import video_find as find
from moesaic.tasks.search.embedders import Described, ImageEmbedder
from moesaic.tasks.search.frames import frame_at
from moesaic.tasks.search.ranges import split_where, typical_score, video_ranges
from moesaic.tasks.search.store import FrameScore
from moesaic.tasks.video import decode_frames
from tests.tasks.scripted import ScriptedBackend

REFS = {"red": (200, 30, 35), "blue": (30, 60, 190), "backdrop": (226, 226, 230)}


class ColourEmbedder(ImageEmbedder):
    """Share of red, blue and backdrop pixels, as a 3-d vector; a text query names one of them."""

    name, dim = "colours", 3

    def describe(self, image: object, extra: dict[str, str] | None = None) -> Described:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)  # type: ignore[attr-defined]
        shares = [float((np.linalg.norm(pixels - np.array(rgb), axis=1) < 60).mean()) for rgb in REFS.values()]
        vector = np.array(shares, dtype=np.float32) + 1e-3
        return Described(vector / np.linalg.norm(vector), "shares " + " ".join(f"{s:.2f}" for s in shares), {})

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return np.array([[float(k in t) for k in REFS] for t in texts], dtype=np.float32)  # (n, 3)


@pytest.fixture()
def colours(monkeypatch: pytest.MonkeyPatch) -> ColourEmbedder:
    embedder = ColourEmbedder()
    for module in (commands, find, query):
        monkeypatch.setattr(module, "make_embedder", lambda *a, **k: embedder)
    return embedder


@pytest.fixture(scope="module")
def needle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_needle_video(tmp_path_factory.mktemp("needle") / "needle.mp4")  # red ball 12.0–13.5, shirt 20–24


def test_sampling_takes_the_changes_at_once_then_dense_then_the_floor(needle: Path) -> None:
    frames = list(sample_frames(needle, FrameSampling(max_side=160)))
    changes = [f.time for f in frames if f.reason == "change"]
    assert changes == [12.0, 13.5, 20.0, 24.0]  # the frames where an object comes or goes
    inside = [f.time for f in frames if 12.0 <= f.time < 13.5]
    assert len(inside) >= 5 and max(np.diff(inside)) <= 0.3  # ≥ 4 fps around the change (10 fps video)
    gaps = np.diff([f.time for f in frames])
    assert gaps.max() <= 1.0 + 1e-6 and frames[0].reason == "first"
    assert {f.image.size for f in frames} == {(160, 90)}  # scaled by the decoder, aspect kept
    assert len(frames) <= 50  # of 300 decoded frames
    few = list(sample_frames(needle, FrameSampling(floor_fps=0.2, dense_seconds=0.0)))
    assert [f.time for f in few if f.reason == "change"] == changes and len(few) <= 12


def test_frame_at_and_decode_frames_at_reduced_size(needle: Path) -> None:
    centre = np.asarray(frame_at(needle, 12.7, max_side=64))[18, 32]
    assert centre[0] > 150 and centre[1] < 90  # the red ball
    assert np.asarray(frame_at(needle, 11.95, max_side=64))[18, 32].min() > 180  # the backdrop
    frames, duration = decode_frames(needle, keep_fps=1.0, max_side=96)
    kept = [f.image for f in frames if f.image is not None]
    assert duration == pytest.approx(30.0) and {im.size for im in kept} == {(96, 54)}


def _scores(video: str, times: list[float], scores: list[float], duration: float) -> list[FrameScore]:
    return [FrameScore(video, duration, i, t, s) for i, (t, s) in enumerate(zip(times, scores))]


def test_ranges_merge_adjacent_matches_and_keep_the_best_score() -> None:
    times = [0.0, 1.0, 2.0, 2.25, 2.5, 3.0, 4.0, 5.0]
    scores = [0.1, 0.1, 0.7, 0.8, 0.1, 0.65, 0.1, 0.1]
    (video,) = video_ranges(_scores("v.mp4", times, scores, 6.0), contrast=0.3, min_score=0.5)
    assert video.typical == pytest.approx(0.1) and video.best == pytest.approx(0.8) and video.best_time == 2.25
    assert [(s.start, s.end, s.score, s.frames) for s in video.spans] == [(2.0, 2.5, 0.8, 2), (3.0, 4.0, 0.65, 1)]
    flat = video_ranges(_scores("v.mp4", times, [0.3] * 8, 6.0), contrast=0.1, min_score=0.0)
    assert flat[0].spans == []  # nothing stands out: nothing found
    low = video_ranges(_scores("v.mp4", times, scores, 6.0), contrast=0.3, min_score=0.75)
    assert [(s.start, s.end) for s in low[0].spans] == [(2.25, 2.5)]  # 0.7 and 0.65 fall short
    _, window = split_where(["time>=2.4", "time<3.5"])
    clipped = video_ranges(_scores("v.mp4", times, scores, 6.0), contrast=0.3, min_score=0.5, window=window)
    assert [(s.start, s.end) for s in clipped[0].spans] == [(2.4, 2.5), (3.0, 3.5)]
    # the typical score weighs each frame by how long it is on screen
    assert typical_score(np.array([0.9, 0.1, 0.1, 0.9]), np.array([0.1, 5.0, 5.0, 0.1])) == pytest.approx(0.1)


def test_where_splits_video_and_time_filters_and_explains_mistakes() -> None:
    rest, window = split_where(["colour=red", "video=clip.mp4", "time=10-20"])
    assert rest == ["colour=red"] and window.videos == ("clip.mp4",) and (window.start, window.end) == (10.0, 20.0)
    assert window.selects("/data/clip.mp4") and not window.selects("/data/other.mp4")
    with pytest.raises(InputError, match="time in seconds"):
        split_where(["time>=soon"])
    with pytest.raises(InputError, match="leave no time"):
        split_where(["time>=20", "time<=10"])
    with pytest.raises(InputError, match="matched with ="):
        split_where(["video>=a.mp4"])


def test_index_a_folder_of_images_and_videos_then_search_both(tmp_path: Path, needle: Path,
                                                              colours: ColourEmbedder) -> None:
    folder = tmp_path / "media"
    save_products(folder, [("t-shirt", "red"), ("bag", "blue")], size=64)
    video = folder / "clips" / "needle.mp4"
    video.parent.mkdir()
    video.write_bytes(needle.read_bytes())
    db = tmp_path / "media.db"
    built = index(IndexConfig(source=str(folder), db=str(db)))
    assert (built.added, built.total, built.videos_added, built.videos) == (2, 2, 1, 1)
    assert built.frames == built.frames_added > 30 and "1 video indexed" in built.render()
    hits = search(SearchConfig(query="red", db=str(db), k=3, contrast=0.05, min_score=0.2)).hits
    kinds = {(h.kind, Path(h.ref).name) for h in hits}
    assert ("image", "red-t-shirt.png") in kinds and ("video", "needle.mp4") in kinds
    ranges = [h for h in hits if h.kind == "video"]
    assert [(h.start, h.end) for h in ranges] == [(12.0, 13.5)]
    assert "[12.00s – 13.50s]" in search(SearchConfig(query="red", db=str(db), contrast=0.05, min_score=0.2)).render()
    only_video = search(SearchConfig(query="red", db=str(db), contrast=0.05, min_score=0.2,
                                     where=["video=needle.mp4", "time>=13"])).hits
    assert [(h.kind, h.start, h.end) for h in only_video] == [("video", 13.0, 13.5)]
    assert search(SearchConfig(query="red", db=str(db), where=["video=other.mp4"])).hits == []
    blue = search(SearchConfig(query="blue", db=str(db), contrast=0.05, min_score=0.1)).hits
    assert blue[0].ref.endswith("blue-bag.png") and [(h.start, h.end) for h in blue if h.kind == "video"] == [(20.0, 24.0)]
    like = search(SearchConfig(image=str(folder / "blue-bag.png"), db=str(db), k=1)).hits
    assert like[0].ref.endswith("blue-bag.png") and like[0].score == pytest.approx(1.0)

    again = index(IndexConfig(source=str(folder), db=str(db)))
    assert (again.videos_added, again.videos_skipped, again.frames_added, again.frames) == (0, 1, 0, built.frames)
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    assert index(IndexConfig(source=str(folder), db=str(db))).videos_skipped == 1
    resampled = index(IndexConfig(source=str(folder), db=str(db), sampling=FrameSampling(floor_fps=0.5)))
    assert resampled.videos_added == 1 and resampled.frames < built.frames  # new sampling: indexed again
    video.unlink()
    pruned = index(IndexConfig(source=str(folder), db=str(db), prune=True, sampling=FrameSampling(floor_fps=0.5)))
    assert (pruned.removed, pruned.videos, pruned.frames, pruned.total) == (1, 0, 0, 2)
    with VectorStore(db) as store:
        assert store.counts() == (2, 0, 0)


def test_a_broken_video_is_reported_and_the_rest_indexed(tmp_path: Path, needle: Path, colours: ColourEmbedder) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "broken.mp4").write_bytes(b"\x00 not a video")
    (tmp_path / "v" / "good.mp4").write_bytes(needle.read_bytes())
    built = index(IndexConfig(source=str(tmp_path / "v"), db=str(tmp_path / "v.db"),
                              sampling=FrameSampling(floor_fps=0.25, dense_seconds=0.0)))
    assert built.videos == 1 and len(built.failed) == 1 and "broken.mp4" in built.failed[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="names no images"):
        index(IndexConfig(source=str(tmp_path / "empty"), db=str(tmp_path / "e.db")))


def test_an_interrupted_video_leaves_nothing_half_indexed(tmp_path: Path, needle: Path, colours: ColourEmbedder,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from moesaic.tasks.search import video_index

    monkeypatch.setattr(video_index, "COMMIT_FRAMES", 4)
    real, calls = colours.describe, {"n": 0}

    def interrupted(image: object, extra: object = None) -> Described:
        calls["n"] += 1
        if calls["n"] == 10:  # after two committed batches
            raise KeyboardInterrupt
        return real(image)

    monkeypatch.setattr(colours, "describe", interrupted)
    cfg = IndexConfig(source=str(needle), db=str(tmp_path / "i.db"), sampling=FrameSampling(floor_fps=0.5))
    with pytest.raises(KeyboardInterrupt):
        index(cfg)
    with VectorStore(tmp_path / "i.db") as store:
        assert store.counts() == (0, 0, 0) and store.count() == 0 and store.videos() == []
    monkeypatch.setattr(colours, "describe", real)
    again = index(cfg)
    assert again.videos_added == 1 and again.frames == again.frames_added > 10


def test_find_indexes_once_and_verify_reranks(tmp_path: Path, needle: Path, colours: ColourEmbedder,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOESAIC_CACHE_DIR", str(tmp_path / "cache"))
    cfg = FindConfig(video=str(needle), query="red blue", ocr=False, contrast=0.05, min_score=0.05)
    first = find.find(cfg)
    assert first.indexed_now and Path(first.db).parent == tmp_path / "cache" / "video-index"
    assert [(r.start, r.end) for r in first.ranges] == [(12.0, 13.5), (20.0, 24.0)]  # the ball has more colour
    second = find.find(cfg)
    assert not second.indexed_now and second.ranges == first.ranges
    backend = ScriptedBackend(["No, it is a shirt.", "Yes."])
    checked = find.run_find(cfg.model_copy(update={"verify": True}), backend)
    assert [(r.start, r.verified, r.answer) for r in checked.ranges] == [(20.0, True, "Yes."),
                                                                         (12.0, False, "No, it is a shirt.")]
    asked = backend.prompts[0][0]
    assert asked.text.startswith("Is there a red blue?") and len(asked.images) == 1
    absent = find.find(cfg.model_copy(update={"query": "green"}))
    assert absent.ranges == [] and "no moment stands out" in absent.render()
    everywhere = find.find(cfg.model_copy(update={"query": "backdrop"}))  # on screen all along: no contrast
    assert everywhere.ranges == [] and everywhere.typical > 0.9


def test_find_helpers_and_errors(tmp_path: Path) -> None:
    assert find.verify_question("red ball") == "Is there a red ball?"
    assert find.verify_question("an apple.") == "Is there an apple?"
    assert [find.yes_or_no(a) for a in ("Yes: a ball (80%).", "No.", "I don't see a dog; …", "Maybe")] == \
        [True, False, False, None]
    assert find.cache_db("clip:openai/clip-vit", False).name == "clip_openai_clip-vit.db"
    with pytest.raises(ConfigError, match="--verify asks about a text query"):
        FindConfig.validated({"video": "a.mp4", "image": "x.png", "verify": True})
    with pytest.raises(InputError, match="does not exist"):
        find.find(FindConfig(video=str(tmp_path / "none.mp4"), query="red"))
    draw_product("bag", "red", 32).save(tmp_path / "x.png")
    with pytest.raises(InputError, match="is an image, not a video"):
        find.find(FindConfig(video=str(tmp_path / "x.png"), query="red"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01 not a video")
    with pytest.raises(InputError, match="not a readable video"):
        find.run_find(FindConfig(video=str(tmp_path / "junk.mp4"), query="red", db=str(tmp_path / "f.db")))
