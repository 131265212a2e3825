"""The attribute task: schema inference, schema-valid decoding, and the eval-attributes report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ft_helpers import write_colour_data
from moesaic.finetune.attributes import eval_attributes
from moesaic.finetune.config import EvalAttributesConfig, FinetuneConfig
from moesaic.finetune.schema import canonical_json, infer_schema, load_schema, validate_attributes
from moesaic.finetune.train import finetune

SCHEMA = {"color": ["blue", "green", "red"], "shape": ["circle", "square"]}


def test_schema_inference_validation_and_file_round_trip(tmp_path: Path) -> None:
    rows = [{"color": "red", "shape": "square"}, {"color": "blue", "shape": "circle"}, {"color": "green"}]
    assert infer_schema(rows) == SCHEMA
    assert canonical_json({"shape": "circle", "color": "red"}, SCHEMA) == '{"color": "red", "shape": "circle"}'
    ok = '{"color": "red", "shape": "circle"}'
    assert validate_attributes(ok, SCHEMA) == ({"color": "red", "shape": "circle"}, None)
    assert validate_attributes('{"color": "red"', SCHEMA)[1].startswith("invalid JSON")
    parsed, problem = validate_attributes('{"color": "pink", "shape": "circle"}', SCHEMA)
    assert parsed == {"color": "pink", "shape": "circle"} and "out-of-schema ['color']" in problem
    (tmp_path / "s.json").write_text(json.dumps({"properties": {"color": {"enum": ["red", "blue"]}}}))
    assert load_schema(tmp_path / "s.json") == {"color": ["red", "blue"]}


@pytest.fixture(scope="module")
def trained(ft_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("attrs")
    train = write_colour_data(root / "train", 48, seed=0, kind="attributes")
    held = write_colour_data(root / "held", 12, seed=1, kind="attributes")
    base = ft_model("idefics3")
    finetune(FinetuneConfig(base_model=str(base), data=str(train), output_dir=str(root / "run"), method="full",
                            lr=1e-3, max_steps=120, batch_size=4, eval_fraction=0.0, scheduler="constant"))
    return base, root / "run", held


def test_untrained_model_output_is_still_schema_valid(trained: tuple[Path, Path, Path]) -> None:
    base, run, held = trained
    report = eval_attributes(EvalAttributesConfig(model=str(base), data=str(held),
                                                  schema_path=str(run / "attribute_schema.json")))
    assert report.samples == 12 and report.schema_invalid_rate == 0.0 and report.invalid_json_rate == 0.0
    assert report.attribute_schema == SCHEMA
    free = eval_attributes(EvalAttributesConfig(model=str(base), data=str(held), strategy="generate",
                                                schema_path=str(run / "attribute_schema.json")))
    assert free.invalid_json_rate > 0.5  # a random model writes no JSON ...
    assert free.schema_invalid_rate == 0.0  # ... yet retry + repair still returns schema-valid attributes


def test_eval_attributes_after_finetuning(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, run, held = trained
    report = eval_attributes(EvalAttributesConfig(model=str(run), data=str(held), output=str(tmp_path / "ev")))
    assert report.attribute_schema == SCHEMA  # read from the run folder
    assert report.schema_invalid_rate == 0.0
    assert set(report.per_field_accuracy) == {"color", "shape"}
    assert report.per_field_accuracy["color"] >= 0.6, report.render()  # chance 1/3
    assert report.exact_match <= min(report.per_field_accuracy.values())
    preds = [json.loads(x) for x in (tmp_path / "ev/predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and all(validate_attributes(json.dumps(p["predicted"]), SCHEMA)[1] is None for p in preds)
    assert json.loads((tmp_path / "ev/report.json").read_text())["exact_match"] == report.exact_match

    free = eval_attributes(EvalAttributesConfig(model=str(run), data=str(held), strategy="generate"))
    assert free.schema_invalid_rate == 0.0  # validate → retry → repair
    assert 0.0 <= free.invalid_json_rate <= 1.0 and set(free.per_field_accuracy) == {"color", "shape"}


def test_cli_eval_attributes(trained: tuple[Path, Path, Path], capsys) -> None:  # noqa: ANN001
    from moesaic.cli import main

    _, run, held = trained
    assert main(["eval-attributes", str(run), str(held)]) == 0
    out = capsys.readouterr().out
    assert "per-field accuracy" in out and "color" in out and "invalid JSON 0.000" in out


def test_eval_attributes_on_a_lora_run(ft_model, tmp_path: Path) -> None:  # noqa: ANN001
    train = write_colour_data(tmp_path / "train", 12, seed=0, kind="attributes")
    run = tmp_path / "run"
    finetune(FinetuneConfig(base_model=str(ft_model("qwen3_vl")), data=str(train), output_dir=str(run),
                            max_steps=3, batch_size=2, eval_fraction=0.0))
    assert load_schema(run / "attribute_schema.json") == SCHEMA
    report = eval_attributes(EvalAttributesConfig(model=str(run), data=str(train)))  # adapter on its base
    assert report.samples == 12 and report.schema_invalid_rate == 0.0 and report.attribute_schema == SCHEMA
    assert all(0.0 <= v <= 1.0 for v in report.per_field_accuracy.values())
