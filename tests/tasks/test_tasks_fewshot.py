"""few-shot prompts: interleaved turns, one image placeholder per image in each family's chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from scripted import ScriptedBackend

from moesaic.errors import InputError
from moesaic.tasks.fewshot import FewShotConfig, build_turns, chat_inputs, hf_messages, run_fewshot
from moesaic.tasks.samples import draw_product


def _images() -> list[Image.Image]:
    sizes = [(32, 32), (64, 32), (48, 48), (64, 64)]
    return [Image.new("RGB", size, (40 * i, 90, 200 - 40 * i)) for i, size in enumerate(sizes)]


def _runs(ids: list[int], token: int) -> list[int]:
    """Lengths of the consecutive runs of ``token`` in ``ids``."""
    runs, current = [], 0
    for tid in ids:
        if tid == token:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + ([current] if current else [])


@pytest.mark.parametrize("family", ["idefics3", "qwen3_vl"])
def test_image_tokens_match_the_images(family: str) -> None:
    from moesaic.testing import tiny_processor

    processor = tiny_processor(family)
    imgs = _images()
    turns = build_turns([([imgs[0]], "What colour?", "blue"), ([imgs[1], imgs[2]], None, "two shades")],
                        [imgs[3]], "What colour?", instruction="Answer in two words.")
    ids: list[int] = chat_inputs(processor, turns)["input_ids"][0].tolist()
    single = [chat_inputs(processor, build_turns([], [im], "q"))["input_ids"][0].tolist().count(
        processor.image_token_id) for im in imgs]
    assert all(n > 0 for n in single)
    assert ids.count(processor.image_token_id) == sum(single)
    assert _runs(ids, processor.image_token_id) == single  # one block per image, in the order given
    text = processor.apply_chat_template(hf_messages(turns), add_generation_prompt=True, tokenize=False)
    assert text.count(processor.image_token) == 4
    assert text.index("blue") < text.index("two shades") < text.rindex("What colour?")


def test_turns_interleave_examples_then_query() -> None:
    a, b, q = _images()[:3]
    turns = build_turns([([a], "Q1", "A1"), ([b], None, "A2")], [q], "Q", instruction="Be brief.")
    assert [t.role for t in turns] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert turns[1].parts == (a, "Q1") and turns[3].parts == (b, "Q") and turns[5].parts == (q, "Q")
    assert turns[4].text == "A2" and turns[4].images == []


class _DroppingProcessor:
    image_token = "<image>"

    def apply_chat_template(self, messages: list[dict[str, Any]], **_: Any) -> str:
        return " ".join(p.get("text", "") for m in messages for p in m["content"])  # forgets the images


def test_a_template_that_drops_images_is_caught() -> None:
    turns = build_turns([], _images()[:2], "q")
    with pytest.raises(InputError, match="0 image placeholders for 2 images"):
        chat_inputs(_DroppingProcessor(), turns)


def test_examples_file_with_relative_paths(tmp_path: Path) -> None:
    for colour in ("red", "blue", "green"):
        draw_product("t-shirt", colour, 64).save(tmp_path / f"{colour}.png")
    lines = [{"image": "red.png", "question": "Colour?", "answer": "red"},
             {"images": ["blue.png"], "answer": "blue"}]
    (tmp_path / "ex.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    backend = ScriptedBackend(["green"])
    cfg = FewShotConfig(image=str(tmp_path / "green.png"), question="Colour?", examples=str(tmp_path / "ex.jsonl"))
    result = run_fewshot(cfg, backend)
    assert (result.text, result.examples, result.images) == ("green", 2, 3)
    sent = backend.prompts[0]
    assert [t.role for t in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert [len(t.images) for t in sent] == [1, 0, 1, 0, 1]
    assert sent[0].images[0].getpixel((32, 40)) == (200, 30, 35)  # the red example, resolved next to the file
    assert sent[4].images[0].getpixel((32, 40)) == (40, 150, 60)
    with pytest.raises(InputError, match="does not exist"):
        run_fewshot(cfg.model_copy(update={"examples": str(tmp_path / "none.jsonl")}), backend)
