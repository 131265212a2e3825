"""The VLM side of the tasks, through the real transformers backend on a tiny random idefics3 model:
each task's prompt reaches the model and its greedy answer comes back unchanged (or fails clearly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from moesaic.backends.registry import load_backend
from moesaic.tasks.base import prompt_backend
from moesaic.tasks.caption import PROMPTS, CaptionConfig, caption
from moesaic.tasks.fewshot import FewShotConfig, build_turns, run_fewshot
from moesaic.tasks.product import DescribeProductConfig, SchemaMismatchError, describe_product
from moesaic.tasks.samples import draw_product, write_colour_video
from moesaic.tasks.tag import TagConfig, parse_tag_list, tag
from moesaic.tasks.video import VideoConfig, chain_prompt, run_video


@pytest.fixture(scope="module")
def vlm(tiny_model_dir: Any) -> tuple[str, Any]:
    path = str(tiny_model_dir("idefics3"))
    return path, load_backend(path)


@pytest.fixture(scope="module")
def shirt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vlm") / "shirt.png"
    draw_product("t-shirt", "red", 64).save(path)
    return path


def test_caption_and_tags_prompt_the_model(vlm: tuple[str, Any], shirt: Path) -> None:
    path, backend = vlm
    image = Image.open(shirt).convert("RGB")
    expected = prompt_backend(backend, [image], PROMPTS["detailed"], 8).text.strip()
    result = caption(CaptionConfig(image=str(shirt), model=path, detail="detailed", max_new_tokens=8))
    assert result.text == expected and result.experts == [] and result.model == path
    tags = tag(TagConfig(image=str(shirt), model=path, top_k=3, max_new_tokens=8))
    assert tags.scored_by == "rank"
    assert [t.score for t in tags.tags] == [1.0, 0.6667, 0.3333][: len(tags.tags)]


def test_random_model_json_is_a_clear_schema_error(vlm: tuple[str, Any], shirt: Path) -> None:
    path, _ = vlm
    with pytest.raises(SchemaMismatchError, match="JSON"):
        describe_product(DescribeProductConfig(image=str(shirt), model=path, writer="vlm", max_new_tokens=12))


def test_fewshot_and_video_run_through_the_chat_template(vlm: tuple[str, Any], shirt: Path, tmp_path: Path) -> None:
    path, backend = vlm
    blue = tmp_path / "blue.png"
    draw_product("t-shirt", "blue", 64).save(blue)
    cfg = FewShotConfig(image=str(shirt), question="Colour?", model=path, max_new_tokens=6,
                        examples=[{"image": str(blue), "question": "Colour?", "answer": "blue"}])
    result = run_fewshot(cfg, backend)
    images = [Image.open(p).convert("RGB") for p in (blue, shirt)]
    turns = build_turns([([images[0]], "Colour?", "blue")], [images[1]], "Colour?")
    assert result.text == backend.generate(turns, _params(6)).text.strip() and result.images == 2

    video = write_colour_video(tmp_path / "v.mp4", [((200, 30, 35), 1.0), ((40, 90, 210), 1.0)])
    answered = run_video(VideoConfig(file=str(video), question="Colour?", model=path, clips=2,
                                     frames_per_clip=2, max_new_tokens=4), backend)
    assert [(c.start, c.end) for c in answered.clips] == [(0.0, 1.0), (1.0, 2.0)]
    assert all(len(c.frames) == 2 for c in answered.clips)
    chained = prompt_backend(backend, [], chain_prompt("Colour?", answered.clips), 4).text.strip()
    assert answered.answer == chained  # the VLM combined the timestamped clip answers


def _params(n: int) -> Any:
    from moesaic.backends.base import GenerationParams

    return GenerationParams(max_new_tokens=n)


def test_parse_tag_list_is_what_tag_uses(vlm: tuple[str, Any], shirt: Path) -> None:
    path, backend = vlm
    image = Image.open(shirt).convert("RGB")
    prompt = ("List up to 3 short tags for the objects and qualities in this image, most important first, "
              "separated by commas. Answer with the tags only.")
    raw = prompt_backend(backend, [image], prompt, 8).text
    result = tag(TagConfig(image=str(shirt), model=path, top_k=3, max_new_tokens=8))
    assert [t.label for t in result.tags] == parse_tag_list(raw, 3)


def test_batch_vqa_takes_each_rows_question(vlm: tuple[str, Any], shirt: Path, tmp_path: Path) -> None:
    import json

    from moesaic.tasks.batch import BatchConfig, batch

    path, backend = vlm
    listing = tmp_path / "qs.csv"
    listing.write_text(f"image,question\n{shirt},What colour is it?\n{shirt},Is it a shirt?\n")
    out = tmp_path / "answers.jsonl"
    result = batch(BatchConfig(task="vqa", input=str(listing), out=str(out), model=path,
                               options={"max_new_tokens": 5}))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.done == 2 and [r["question"] for r in rows] == ["What colour is it?", "Is it a shirt?"]
    image = Image.open(shirt).convert("RGB")
    assert rows[1]["text"] == prompt_backend(backend, [image], "Is it a shirt?", 5).text.strip()
    assert len({r["id"] for r in rows}) == 2  # one image, two questions: two rows to resume by
    assert batch(BatchConfig(task="vqa", input=str(listing), out=str(out), model=path)).skipped == 2


def test_vlm_writer_gets_the_hidden_template_as_text_turns(vlm: tuple[str, Any]) -> None:
    from moesaic.inputs.messages import Turn
    from moesaic.tasks.product import ProductAttributes
    from moesaic.tasks.product.writer import load_template, render_messages, write_description

    _, backend = vlm
    attrs = ProductAttributes(category="top", item_type="t-shirt", colours=["red"])
    text = write_description(attrs, "vlm", backend=backend, max_new_tokens=6)
    turns = [Turn(role=m["role"], parts=(m["content"],)) for m in render_messages(attrs, load_template())]
    assert text == backend.generate(turns, _params(6)).text.strip().split("\n\n")[0].strip()
