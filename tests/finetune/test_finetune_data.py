"""Data validation (row-numbered errors), assistant-only labels, and the vision-token budget."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ft_helpers import shape_image, write_colour_data
from moesaic.finetune.budget import prepare, stats
from moesaic.finetune.config import BudgetSettings
from moesaic.finetune.data import DataError, load_samples
from moesaic.finetune.encode import IGNORE_INDEX, collate
from moesaic.finetune.model import image_token_id, load_processor


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_rows_are_all_reported_with_row_numbers(tmp_path: Path) -> None:
    shape_image("red", random.Random(0)).save(tmp_path / "ok.png")
    rows = [
        {"image": "ok.png", "question": "Colour?", "answer": "red"},                      # fine
        {"image": "missing.png", "question": "Colour?", "answer": "red"},                 # row 2
        {"images": ["ok.png", "ok.png"], "messages": [                                    # row 3
            {"role": "user", "content": "<image> Colour?"}, {"role": "assistant", "content": "red"}]},
        {"image": "ok.png", "question": "Colour?", "answer": "  "},                       # row 4
        {"image": "ok.png", "text": "no task columns"},                                   # row 5
    ]
    with pytest.raises(DataError) as info:
        load_samples(_jsonl(tmp_path / "d.jsonl", rows))
    msg = str(info.value)
    assert "4 bad row(s)" in msg
    assert "row 2: image missing.png not found" in msg
    assert "row 3: 1 image placeholder(s) but 2 image(s)" in msg
    assert "row 4: empty answer" in msg
    assert "row 5: needs 'messages'" in msg
    assert info.value.hint


def test_csv_sharegpt_and_attributes_rows_normalise(tmp_path: Path) -> None:
    shape_image("red", random.Random(0)).save(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text(
        'image,question,answer,attributes\n'
        'a.png,What colour?,red,\n'
        'a.png,,,"{""color"": ""red"", ""shape"": ""square""}"\n')
    qa, attrs = load_samples(tmp_path / "d.csv")
    assert qa.answer == "red" and qa.messages[0]["content"][0] == {"type": "image"}
    assert attrs.attributes == {"color": "red", "shape": "square"}
    assert json.loads(attrs.answer) == {"color": "red", "shape": "square"}
    share = _jsonl(tmp_path / "s.jsonl", [{"image": "a.png", "conversations": None, "messages": [
        {"from": "human", "value": "Look: <image> what colour?"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "yes"}]}])
    (s,) = load_samples(share)
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert s.messages[0]["content"] == [{"type": "text", "text": "Look:"}, {"type": "image"},
                                        {"type": "text", "text": "what colour?"}]


@pytest.mark.parametrize("family", ["idefics3", "qwen3_vl"])
def test_labels_cover_only_assistant_tokens(ft_model, tmp_path: Path, family: str) -> None:  # noqa: ANN001
    shape_image("red", random.Random(0)).save(tmp_path / "a.png")
    path = _jsonl(tmp_path / "d.jsonl", [
        {"image": "a.png", "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "red"},
            {"role": "user", "content": "And the shape?"},
            {"role": "assistant", "content": "square"}]},
        {"image": "a.png", "question": "What colour is it?", "answer": "blue"}])
    processor = load_processor(ft_model(family))
    tid = image_token_id(processor)
    items, _ = prepare(processor, load_samples(path), BudgetSettings(), tid)
    batch = collate(processor, items)
    labels, ids = batch["labels"], batch["input_ids"]  # (batch, seq)
    eos = processor.tokenizer.eos_token
    first = processor.tokenizer.decode(labels[0][labels[0] != IGNORE_INDEX])
    assert first.replace(eos, "|").replace("\n", "").replace(" ", "") == "red|square|"
    second = processor.tokenizer.decode(labels[1][labels[1] != IGNORE_INDEX])
    assert second.strip().startswith("blue")
    assert not bool(((ids == tid) & (labels != IGNORE_INDEX)).any()), "image tokens must not be learned"
    pad = batch["attention_mask"] == 0
    assert bool(pad.any()) and not bool((labels[pad] != IGNORE_INDEX).any()), "padding must not be learned"
    assert items[0][1].n_image_tokens == int((ids[0] == tid).sum()) > 0


def test_budget_resizes_samples_over_the_budget(ft_model, tmp_path: Path) -> None:  # noqa: ANN001
    processor = load_processor(ft_model("qwen3_vl"))  # Qwen-VL: image tokens grow with pixels
    tid = image_token_id(processor)
    rng = random.Random(0)
    shape_image("red", rng, (32, 32)).save(tmp_path / "small.png")
    shape_image("blue", rng, (64, 64)).save(tmp_path / "big.png")
    path = _jsonl(tmp_path / "d.jsonl", [
        {"image": "small.png", "question": "Colour?", "answer": "red"},
        {"image": "big.png", "question": "Colour?", "answer": "blue"},
        {"images": ["big.png", "big.png"], "question": "<image><image>Colours?", "answer": "blue blue"}])
    free, free_report = prepare(processor, load_samples(path), BudgetSettings(), tid)
    counts = [e.n_image_tokens for _, e in free]
    assert counts[1] > counts[0] and counts[2] == 2 * counts[1]
    assert free_report.resized == [] and free_report.image_tokens.max == counts[2]
    budget = counts[1] - 1
    items, report = prepare(processor, load_samples(path), BudgetSettings(max_image_tokens=budget), tid)
    assert [r.row for r in report.resized] == [2, 3]
    assert all(e.n_image_tokens <= budget for _, e in items)
    big = report.resized[0]
    assert big.sizes_before == [(64, 64)] and big.sizes_after[0][0] < 64
    assert big.image_tokens_before == counts[1] and big.image_tokens_after <= budget
    assert report.image_tokens_before.max == counts[2] and report.image_tokens.max <= budget
    assert "resized 2 sample(s): rows [2, 3]" in report.render()
    pixels, _ = prepare(processor, load_samples(path), BudgetSettings(max_pixels=40 * 40), tid)
    assert all(img.width * img.height <= 40 * 40 for s, _ in pixels for img in s.pil)


def test_too_long_samples_are_dropped_or_rejected_never_cut(ft_model, tmp_path: Path) -> None:  # noqa: ANN001
    processor = load_processor(ft_model("idefics3"))
    path = write_colour_data(tmp_path, 3)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[1]["question"] = "What colour is the shape? " * 20
    _jsonl(path, rows)
    tid = image_token_id(processor)
    full, _ = prepare(processor, load_samples(path), BudgetSettings(), tid)
    limit = full[0][1].n_tokens + 5
    kept, report = prepare(processor, load_samples(path), BudgetSettings(max_length=limit, too_long="drop"), tid)
    assert [s.row for s, _ in kept] == [1, 3] and report.dropped_rows == [2]
    assert all(e.n_tokens == f.n_tokens for (_, e), (_, f) in zip(kept, [full[0], full[2]]))
    with pytest.raises(DataError, match=r"row 2: \d+ tokens > budget.max_length"):
        prepare(processor, load_samples(path), BudgetSettings(max_length=limit), tid)


def test_stats_quantiles() -> None:
    s = stats(list(range(1, 21)))
    assert (s.min, s.median, s.max) == (1, 10.5, 20) and s.p95 == pytest.approx(19.05)
    assert stats([]) is None


def test_budget_that_no_size_can_meet_fails_fast_with_the_row(ft_model, tmp_path: Path) -> None:  # noqa: ANN001
    processor = load_processor(ft_model("idefics3"))  # the tiny Idefics3 gives every image a fixed 4 tokens
    path = write_colour_data(tmp_path, 2)
    with pytest.raises(DataError, match=r"row 1: 4 image tokens, still 4 at the smallest size") as info:
        prepare(processor, load_samples(path), BudgetSettings(max_image_tokens=3), image_token_id(processor))
    assert "raise budget.max_image_tokens" in (info.value.hint or "")


def test_unreadable_image_is_reported_with_its_row(ft_model, tmp_path: Path) -> None:  # noqa: ANN001
    shape_image("red", random.Random(0)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    path = _jsonl(tmp_path / "d.jsonl", [{"image": "ok.png", "question": "Colour?", "answer": "red"},
                                         {"image": "bad.png", "question": "Colour?", "answer": "red"}])
    processor = load_processor(ft_model("idefics3"))
    with pytest.raises(DataError, match=r"^row 2: ") as info:
        prepare(processor, load_samples(path), BudgetSettings(), image_token_id(processor))
    assert info.value.hint
