"""video: frames that change colour at known times get per-clip answers with the right timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesaic.backends.base import Answer, Backend, GenerationParams
from moesaic.errors import InputError
from moesaic.inputs.messages import Turn
from moesaic.tasks.samples import write_colour_video
from moesaic.tasks.video import VideoConfig, decode_frames, probe_duration, run_video, split_clips

RED, GREEN, BLUE = (200, 30, 35), (50, 150, 60), (40, 90, 210)


class ColourBackend(Backend):
    """Answers with the colour name of the frames it is shown (the starter colour expert), or echoes text."""

    name = "colour"
    max_images = 2

    def __init__(self) -> None:
        self.seen: list[int] = []

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        from moesaic.experts.colors import dominant_colors

        images = prompt[-1].images
        self.seen.append(len(images))
        if not images:
            return Answer(text="SUMMARY: " + prompt[-1].text.splitlines()[1], model=self.name)
        names = {dominant_colors(img, k=1)[0].name for img in images}
        return Answer(text=" and ".join(sorted(names)), model=self.name)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "colours.mp4"
    return write_colour_video(path, [(RED, 1.0), (GREEN, 1.5), (BLUE, 1.0)], fps=10)


def test_decode_gives_timestamps_and_keeps_few_full_frames(clip: Path) -> None:
    frames, duration = decode_frames(clip, keep_fps=2.0)
    assert len(frames) == 35 and duration == pytest.approx(3.5)
    assert [round(f.time, 2) for f in frames[:3]] == [0.0, 0.1, 0.2]
    kept = [round(f.time, 2) for f in frames if f.image is not None]
    assert kept == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # 2 per second; the cuts at 1.0 and 2.5 fall on them
    assert frames[0].image is not None and frames[0].image.size == (64, 64)
    every = decode_frames(clip, keep_fps=2.0, scene_threshold=1.0)[0]
    assert sum(f.image is not None for f in every) == 7
    cuts = decode_frames(clip, keep_fps=0.1)[0]
    assert [round(f.time, 2) for f in cuts if f.image is not None] == [0.0, 1.0, 2.5]  # first frame of each scene


def test_uniform_clips_each_get_their_own_frame_at_a_low_keep_rate(clip: Path) -> None:
    assert probe_duration(clip) == pytest.approx(3.5, abs=0.15)
    cfg = VideoConfig(file=str(clip), question="What colour?", clips=7, keep_fps=0.5)
    result = run_video(cfg, ColourBackend())
    assert [c.answer for c in result.clips] == ["red", "red", "green", "green", "green", "blue", "blue"]
    assert all(c.start <= c.frames[0] < c.end for c in result.clips)


def test_scene_sampling_cuts_at_the_colour_changes(clip: Path) -> None:
    backend = ColourBackend()
    result = run_video(VideoConfig(file=str(clip), question="What colour?", sampling="scene"), backend)
    spans = [(c.start, c.end, c.answer) for c in result.clips]
    assert spans == [(0.0, 1.0, "red"), (1.0, 2.5, "green"), (2.5, 3.5, "blue")]
    assert result.duration == pytest.approx(3.5)
    assert result.answer == "SUMMARY: 0.0–1.0s: red; 1.0–2.5s: green; 2.5–3.5s: blue"
    assert "[  1.00s –   2.50s] green" in result.render()


def test_uniform_sampling_answers_each_clip_and_merges_in_the_chain(clip: Path) -> None:
    backend = ColourBackend()
    cfg = VideoConfig(file=str(clip), question="What colour?", sampling="uniform", clips=7, frames_per_clip=3)
    result = run_video(cfg, backend)
    assert [c.answer for c in result.clips] == ["red", "red", "green", "green", "green", "blue", "blue"]
    assert [c.start for c in result.clips] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert backend.seen[:-1] == [2] * 7  # frames_per_clip capped by the backend's max_images
    assert all(c.start <= t < c.end for c in result.clips for t in c.frames)
    assert result.answer == "SUMMARY: 0.0–1.0s: red; 1.0–2.5s: green; 2.5–3.5s: blue"


def test_split_clips_uniform_covers_the_video(clip: Path) -> None:
    frames, duration = decode_frames(clip)
    segments = split_clips(frames, duration, "uniform", 4, 0.15)
    assert sum(len(s[2]) for s in segments) == len(frames)
    assert segments[0][0] == 0.0 and segments[-1][1] == pytest.approx(3.5)


def test_invalid_videos_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        decode_frames(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 definitely not a video")
    with pytest.raises(InputError, match="not a readable video"):
        decode_frames(junk)
    full = write_colour_video(tmp_path / "one.mkv", [((200, 30, 35), 1.0)])
    headers_only = tmp_path / "cut.mkv"
    data = full.read_bytes()
    headers_only.write_bytes(data[: data.index(b"\x1f\x43\xb6\x75") + 8])  # cut inside the first Cluster's header
    with pytest.raises(InputError, match="holds no decodable frames"):
        decode_frames(headers_only)
    import subprocess

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "no frames here"], check=True, capture_output=True)
    with pytest.raises(InputError, match="no video stream"):
        decode_frames(wav)
