"""Tasks that answer questions on the starter experts' backend (vqa, few-shot, video), end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesaic.tasks.fewshot import FewShotConfig, fewshot
from moesaic.tasks.samples import draw_product, write_colour_video
from moesaic.tasks.video import VideoConfig, video
from moesaic.tasks.vqa import VQAConfig, vqa


@pytest.fixture(scope="module")
def shirt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("starter") / "shirt.png"
    draw_product("t-shirt", "blue").save(path)
    return path


def test_vqa_colour_question_on_the_starter_experts(shirt: Path) -> None:
    result = vqa(VQAConfig(image=str(shirt), question="What colour is this shirt?"))
    assert "blue" in result.text.lower() and result.experts
    assert result.question == "What colour is this shirt?" and result.model == "starter"


def test_fewshot_on_the_starter_experts(shirt: Path, tmp_path: Path) -> None:
    red = tmp_path / "red.png"
    draw_product("t-shirt", "red").save(red)
    cfg = FewShotConfig(image=str(shirt), question="What colour is this shirt?",
                        examples=[{"image": str(red), "question": "What colour is this shirt?", "answer": "red"}])
    result = fewshot(cfg)
    assert "blue" in result.text.lower() and "red" not in result.text.lower()  # only the query was shown
    assert (result.examples, result.images, result.examples_used) == (1, 2, False)


def test_video_on_the_starter_experts(tmp_path: Path) -> None:
    clip = write_colour_video(tmp_path / "v.mp4", [((200, 30, 35), 1.0), ((40, 90, 210), 1.0)], size=96)
    result = video(VideoConfig(file=str(clip), question="What colour is it?", sampling="scene"))
    assert [(c.start, c.end) for c in result.clips] == [(0.0, 1.0), (1.0, 2.0)]
    assert "red" in result.clips[0].answer.lower() and "blue" in result.clips[1].answer.lower()
    assert result.answer.startswith("0.0–1.0s: ") and "; 1.0–2.0s: " in result.answer and ".;" not in result.answer
