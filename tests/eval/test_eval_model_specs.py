"""Every model spec ``moesaic ask`` accepts works in ``moesaic eval``, through the same backend registry:
``starter``, ``starter:llm``, a folder, a merged MoE (with its routing option), a hub id, an endpoint.
Where it is cheap, eval's answer is compared with ask's for the same spec, image and question."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from moesaic.ask import AskConfig, ask
from moesaic.backends.registry import resolve_backend
from moesaic.errors import InputError, ModelLoadError
from moesaic.eval import EvalConfig, EvalModel, evaluate
from moesaic.eval.answerers import BackendAnswerer, make_answerer
from moesaic.experts.backend import StarterBackend

QUESTION = "What colour is it?"


def _eval_answers(tmp_path: Path, qa: Path, model: dict[str, object], max_new_tokens: int = 6) -> list[str]:
    out = tmp_path / f"out-{model['name']}"
    evaluate(EvalConfig.validated({"models": [model], "datasets": [{"name": "qa", "path": str(qa)}],
                                   "out": str(out), "warmup": 0, "max_samples": 1,
                                   "generation": {"max_new_tokens": max_new_tokens}}))
    return [json.loads(line)["answer"] for line in (out / "predictions.jsonl").read_text().splitlines()]


def _ask_answer(image: Path, max_tokens: int = 6, **spec: object) -> str:
    return ask(AskConfig(image=str(image), question=QUESTION, max_tokens=max_tokens, **spec)).answer


@pytest.mark.parametrize(("model", "writer"), [("starter", "template"), ("starter:llm", "llm"),
                                               ("starter:template", "template")])
def test_starter_variants_load_as_in_ask(model: str, writer: str) -> None:
    answerer = make_answerer(EvalModel(name="m", model=model))
    assert isinstance(answerer, BackendAnswerer) and isinstance(answerer.backend, StarterBackend)
    assert answerer.backend.writer == writer  # type: ignore[attr-defined]
    assert resolve_backend(model).name == "starter"


def test_registry_variant_rule_leaves_paths_and_hub_ids_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "starter:mine").mkdir()  # a folder that happens to look like a variant
    assert resolve_backend("starter:mine").name == "hf"
    assert resolve_backend("HuggingFaceTB/SmolVLM-256M-Instruct").name == "hf"
    with pytest.raises(InputError, match="unknown starter writer 'poem'"):
        make_answerer(EvalModel(name="m", model="starter:poem"))


def test_starter_answers_as_in_ask(tmp_path: Path, qa_dataset: Path, images: dict[str, Path]) -> None:
    got = _eval_answers(tmp_path, qa_dataset, {"name": "s", "model": "starter"}, max_new_tokens=32)
    assert got == [_ask_answer(images["red"], max_tokens=32)] and got[0].startswith("The main colour is red")


def test_hub_id_fails_as_in_ask(tmp_path: Path, qa_dataset: Path, images: dict[str, Path],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "HuggingFaceTB/SmolVLM-256M-Instruct"
    with pytest.raises(ModelLoadError, match=f"could not load model '{hub_id}'") as from_eval:
        _eval_answers(tmp_path, qa_dataset, {"name": "hub", "model": hub_id})
    with pytest.raises(ModelLoadError) as from_ask:
        _ask_answer(images["red"], model=hub_id)
    assert from_eval.value.hint == from_ask.value.hint


def test_folder_answers_as_in_ask(tmp_path: Path, qa_dataset: Path, images: dict[str, Path], tiny_model_dir) -> None:  # noqa: ANN001
    folder = tiny_model_dir("idefics3")
    got = _eval_answers(tmp_path, qa_dataset, {"name": "tiny", "model": str(folder)})
    assert got == [_ask_answer(images["red"], model=str(folder))]


@pytest.mark.slow
def test_merged_moe_with_sequence_routing_answers_as_in_ask(tmp_path: Path, qa_dataset: Path,
                                                             images: dict[str, Path], tiny_model_dir) -> None:  # noqa: ANN001
    from moesaic.moe.config import MergeConfig
    from moesaic.moe.merge import merge
    from moesaic.moe.sequence_routing import get_routing

    base = tiny_model_dir("idefics3")
    moe = tmp_path / "moe"
    merge(MergeConfig(base_model=str(base), experts=[{"source_model": str(base)}, {"source_model": str(base)}],
                      gate_mode="random", experts_per_token=1, output_architecture="generic", out=str(moe)))
    answerer = make_answerer(EvalModel(name="moe", model=str(moe), routing="sequence"))
    assert get_routing(answerer.backend.model) == "sequence"  # type: ignore[attr-defined]
    answerer.close()
    got = _eval_answers(tmp_path, qa_dataset, {"name": "moe", "model": str(moe), "routing": "sequence"})
    assert got == [_ask_answer(images["red"], model=str(moe), routing="sequence")]


@pytest.fixture
def served_starter() -> Iterator[str]:
    """``moesaic serve``'s app around the starter experts, on a free loopback port (base URL, no /v1)."""
    from moesaic.backends.registry import load_backend
    from moesaic.serve.app import create_app
    from moesaic.serve.settings import ServeConfig
    from moesaic.testing.server import running

    app = create_app(ServeConfig(model="starter", served_model_name="experts"), load_backend("starter"))
    with running(app) as url:
        yield url


def test_endpoint_spec_as_in_ask(tmp_path: Path, qa_dataset: Path, images: dict[str, Path],
                                 served_starter: str) -> None:
    # As with `moesaic ask --endpoint URL --model NAME`: the URL without /v1, the served name in `model`.
    got = _eval_answers(tmp_path, qa_dataset, {"name": "remote", "endpoint": served_starter, "model": "experts"},
                        max_new_tokens=32)
    expected = _ask_answer(images["red"], max_tokens=32, endpoint=served_starter, model="experts")
    assert got == [expected] and expected.startswith("The main colour is red")
    # No name given: the one model the server lists is used, as ask does.
    unnamed = _eval_answers(tmp_path, qa_dataset, {"name": "anon", "endpoint": served_starter + "/v1"},
                            max_new_tokens=32)
    assert unnamed == got
    with pytest.raises(ValueError, match="give one"):
        EvalModel(name="x", endpoint=served_starter, model="a", endpoint_model="b")


@pytest.mark.slow
def test_starter_llm_answers_as_in_ask(tmp_path: Path, qa_dataset: Path, images: dict[str, Path]) -> None:
    """The spec issue 19 found failing in eval ("Repo id must use alphanumeric chars"): now the same answer."""
    got = _eval_answers(tmp_path, qa_dataset, {"name": "llm", "model": "starter:llm"}, max_new_tokens=8)
    assert got == [_ask_answer(images["red"], max_tokens=8, model="starter:llm")] and got[0].strip()
