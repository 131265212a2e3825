"""Dataset rows are read and checked before any model loads; each problem names the file, line and fix."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from moesaic.errors import ConfigError
from moesaic.eval.cache import AnswerCache, CachedAnswer
from moesaic.eval.config import EvalConfig, EvalDataset
from moesaic.eval.data import attribute_prompt, is_local_path_ref, load_samples


def _load(tmp_path: Path, lines: list[str], **kw: object) -> list:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return load_samples(EvalDataset(name="d", path=path, **kw), None)  # type: ignore[arg-type]


def test_rows_and_defaults(tmp_path: Path, images: dict[str, Path]) -> None:
    data = images["red"].parent.parent
    b64 = base64.b64encode(images["red"].read_bytes()).decode()
    samples = _load(data, [
        json.dumps({"image": "img/red.png", "question": "q?", "reference": "red"}),
        "",
        json.dumps({"id": 7, "image": b64, "question": "q?", "references": ["a", "b"]}),
        json.dumps({"image": "https://example.com/x.png", "attributes": {"color": "red", "size": "M"}}),
    ])
    assert [s.id for s in samples] == ["1", "7", "4"]  # default id: the line number
    assert samples[0].image == str(images["red"].resolve()) and samples[0].references == ("red",)
    assert samples[0].image_digest and samples[1].image_digest == "" and samples[1].image == b64
    assert samples[2].kind == "attributes" and samples[2].question == attribute_prompt(["color", "size"])
    assert samples[2].question == "Describe the product as a JSON object with the keys: color, size."
    # the same picture at another path fingerprints the same (cache survives moving a dataset)
    moved = images["red"].parent / "copy.png"
    moved.write_bytes(images["red"].read_bytes())
    again = _load(data, [json.dumps({"image": "img/copy.png", "question": "q?", "reference": "red"})])
    assert again[0].fingerprint() == samples[0].fingerprint()


def test_prompt_and_max_samples(tmp_path: Path, images: dict[str, Path]) -> None:
    data = images["red"].parent.parent
    row = json.dumps({"image": "img/red.png", "attributes": {"color": "red"}})
    samples = _load(data, [row, row.replace("{", '{"id": "b", ', 1)], prompt="List the attributes.")
    assert [s.question for s in samples] == ["List the attributes."] * 2
    path = data / "d.jsonl"
    assert len(load_samples(EvalDataset(name="d", path=path), 1)) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"d.jsonl:1: not valid JSON"),
        ("[1, 2]", r"d.jsonl:1: each line must be a JSON object"),
        ('{"question": "q?", "reference": "a"}', r"d.jsonl:1: missing 'image'"),
        ('{"image": "img/red.png", "reference": "a"}', r"d.jsonl:1: missing 'question'"),
        ('{"image": "img/red.png", "question": "q?"}', r"d.jsonl:1: missing 'reference'"),
        ('{"image": "img/red.png", "question": "q?", "references": []}', r"missing 'reference'"),
        ('{"image": "img/red.png", "attributes": {}}', r"'attributes' must be a non-empty object"),
        ('{"image": "img/nope.png", "question": "q?", "reference": "a"}', r"image 'img/nope.png' not found"),
    ],
)
def test_bad_rows(tmp_path: Path, images: dict[str, Path], line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(images["red"].parent.parent, [line])


def test_duplicate_ids_and_empty_and_missing(tmp_path: Path, images: dict[str, Path]) -> None:
    data = images["red"].parent.parent
    row = json.dumps({"id": "x", "image": "img/red.png", "question": "q?", "reference": "a"})
    with pytest.raises(ConfigError, match=r"d.jsonl:2: duplicate id 'x'"):
        _load(data, [row, row])
    with pytest.raises(ConfigError, match="has no rows"):
        _load(data, [""])
    with pytest.raises(ConfigError, match="does not exist"):
        load_samples(EvalDataset(name="d", path=tmp_path / "missing.jsonl"))


def test_is_local_path_ref(tmp_path: Path) -> None:
    assert is_local_path_ref("img/a.png") and is_local_path_ref("a")
    name = "z" * 100  # only base64 letters: base64 unless such a file exists
    assert not is_local_path_ref(name, tmp_path)
    (tmp_path / name).write_bytes(b"x")
    assert is_local_path_ref(name, tmp_path)
    assert not is_local_path_ref("https://a/b.png") and not is_local_path_ref("data:image/png;base64,AAAA")
    assert not is_local_path_ref("QUJD" * 40)  # long base64


def test_config_file_positional_and_overrides(tmp_path: Path, qa_dataset: Path) -> None:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"models: [{{name: m, model: starter}}]\ndatasets: [{{name: qa, path: {qa_dataset}}}]\n"
                   "generation: {max_new_tokens: 4, temperature: 0.0}\n")
    config = EvalConfig.load(None, {"config_file": str(cfg), "generation.max_new_tokens": 9, "max_samples": 2})
    assert config.generation.max_new_tokens == 9 and config.max_samples == 2 and config.models[0].name == "m"
    other = EvalConfig.load(None, {"config_file": str(cfg), "generation.max_new_tokens": 10})
    assert config.generation_hash(config.models[0]) != other.generation_hash(other.models[0])
    with pytest.raises(ConfigError, match="does not exist"):
        EvalConfig.load(None, {"config_file": str(tmp_path / "nope.yaml")})


def test_cache_disabled_and_torn_lines(tmp_path: Path) -> None:
    entry = CachedAnswer(model="m", dataset="d", sample_id="1", gen_hash="h", fingerprint="f", text="hi",
                         latency_s=0.5)
    cache = AnswerCache(tmp_path)
    cache.put(entry)
    with cache.path.open("a") as fh:
        fh.write('{"model": "m", "dataset"')  # torn by a crash
    reread = AnswerCache(tmp_path)
    assert len(reread) == 1 and reread.get("m", "d", "1", "h", "f") == entry
    assert reread.get("m", "d", "1", "other-hash", "f") is None
    reread.put(entry.model_copy(update={"sample_id": "2"}))  # starts on a fresh line after the torn one
    assert len(AnswerCache(tmp_path)) == 2
    off = AnswerCache(tmp_path, enabled=False)
    assert off.get("m", "d", "1", "h", "f") is None
    size = cache.path.stat().st_size
    off.put(entry.model_copy(update={"sample_id": "3"}))
    assert cache.path.stat().st_size == size


def test_starter_model_through_the_registry(tmp_path: Path, qa_dataset: Path) -> None:
    """The offline starter experts (the default model) evaluated like any other: their colour expert names
    each picture's colour, and token F1 against the one-word reference is 2 / (n + 1) for an n-token answer
    that contains it once (precision 1/n, recall 1)."""
    from moesaic.eval import evaluate
    from moesaic.eval.metrics import squad_normalize

    qa_dataset.write_text("".join(
        json.dumps({"id": c, "image": f"img/{c}.png", "question": "What colour is it?", "reference": c}) + "\n"
        for c in ("red", "blue", "green")))
    config = EvalConfig.validated({"models": [{"name": "starter", "model": "starter", "price_per_hour": 0.1}],
                                   "datasets": [{"name": "qa", "path": str(qa_dataset)}],
                                   "metrics": ["token_f1", "normalized_match"], "out": str(tmp_path / "out")})
    result = evaluate(config)
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    expected = []
    for p in preds:
        tokens = squad_normalize(p["answer"]).split()
        assert tokens.count(p["sample_id"]) == 1, p["answer"]
        expected.append(2 / (len(tokens) + 1))
    metrics = result.models[0].datasets[0].metrics
    assert metrics["token_f1"] == pytest.approx(sum(expected) / 3)
    # a sentence is not the bare word: normalized match only for one-word answers
    assert metrics["normalized_match"] == pytest.approx(sum(len(squad_normalize(p["answer"]).split()) == 1
                                                            for p in preds) / 3)
    assert result.models[0].peak_rss_mb is not None and result.models[0].model_calls == 3


def test_cache_key_follows_local_model_files(tmp_path: Path, qa_dataset: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"1234")
    config = EvalConfig.validated({"models": [{"name": "m", "model": str(folder)}],
                                   "datasets": [{"name": "qa", "path": str(qa_dataset)}]})
    before = config.generation_hash(config.models[0])
    assert config.generation_hash(config.models[0]) == before  # stable
    (folder / "model.safetensors").write_bytes(b"123456")  # retrained weights at the same path
    assert config.generation_hash(config.models[0]) != before
