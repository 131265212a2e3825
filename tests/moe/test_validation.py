"""Validation before loading weights, unsupported architectures, degenerate-gate warnings, the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from moesaic.errors import ConfigError, UnsupportedArchitectureError
from moesaic.moe.arch import list_architectures, select_architecture
from moesaic.moe.config import MergeConfig
from moesaic.moe.merge import merge, validate_merge
from moesaic.moe.modelinfo import read_config


def _spec(path: Path, prompts: list[str] | None = None) -> dict[str, object]:
    return {"source_model": str(path), "positive_prompts": prompts if prompts is not None else ["a cat"]}


@pytest.mark.parametrize(("family", "why"), [("blip2", "'opt'"), ("git", "'git'"), ("vilt", "'vilt'")])
def test_unsupported_architecture_is_one_clear_error(family, why, tiny_model_dir, tmp_path) -> None:
    base = tiny_model_dir(family)
    with pytest.raises(UnsupportedArchitectureError) as err:
        merge(MergeConfig(base_model=str(base), experts=[_spec(base)], experts_per_token=1, out=str(tmp_path / "o")))
    text = str(err.value)
    for name in ("mixtral:", "qwen2_moe:", "qwen3_vl_moe:", "generic:"):  # every family says why not
        assert name in text
    assert why in text and "supported: mixtral" in text
    assert not (tmp_path / "o").exists()


def test_requested_family_that_does_not_fit_names_the_ones_that_do(tiny_model_dir) -> None:
    cfg = read_config(str(tiny_model_dir("idefics3")))
    with pytest.raises(UnsupportedArchitectureError, match="supported for this model: mixtral, generic"):
        select_architecture(cfg, "qwen3_vl_moe")
    assert select_architecture(cfg).name == "mixtral"
    assert select_architecture(read_config(str(tiny_model_dir("qwen3_vl")))).name == "qwen3_vl_moe"
    assert [a.name for a in list_architectures()] == ["mixtral", "qwen2_moe", "qwen3_vl_moe", "qwen3_5_moe", "generic"]
    with pytest.raises(UnsupportedArchitectureError, match="supported for this model: qwen2_moe, generic"):
        select_architecture(read_config(str(tiny_model_dir("llava_onevision"))), "mixtral")


@pytest.mark.parametrize(("text_cls", "why"), [("CohereConfig", "parallel"), ("GPT2Config", "'gpt2'")])
def test_generic_refuses_from_config_json_before_any_weight(text_cls, why, tmp_path) -> None:
    import transformers

    cfg = getattr(transformers, text_cls)(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg.save_pretrained(tmp_path / "base")  # a config.json and no weights: loading them would fail otherwise
    base = str(tmp_path / "base")
    with pytest.raises(UnsupportedArchitectureError, match=why) as err:
        merge(MergeConfig(base_model=base, experts=[_spec(Path(base))], experts_per_token=1,
                          output_architecture="generic", out=str(tmp_path / "o")))
    assert "generic (any" in str(err.value)  # the hint lists the families and what each takes


def test_top_k_and_prompts_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match="experts_per_token=3 is larger than the 2 experts"):
        MergeConfig.validated({"base_model": "b", "experts": [_spec(tmp_path), _spec(tmp_path)],
                               "experts_per_token": 3})
    with pytest.raises(ConfigError, match="needs positive_prompts .* missing for: x"):
        MergeConfig.validated({"base_model": "b", "experts": [{"source_model": "a/x"}], "experts_per_token": 1})
    ok = MergeConfig.validated({"base_model": "b", "experts": [{"source_model": "a/x"}], "experts_per_token": 1,
                                "gate_mode": "random"})
    assert ok.gate_mode == "random"


def test_shape_mismatch_is_found_from_config_json_alone(tiny_model_dir, tmp_path) -> None:
    base = tiny_model_dir("idefics3")
    other = tmp_path / "other"  # only a config.json: loading its weights would fail differently
    other.mkdir()
    data = json.loads((base / "config.json").read_text())
    data["text_config"]["intermediate_size"] = 96
    (other / "config.json").write_text(json.dumps(data))
    cfg = MergeConfig(base_model=str(base), experts=[_spec(base), _spec(other)], experts_per_token=1)
    with pytest.raises(ConfigError, match=r"other: text intermediate_size 96 != base 128"):
        validate_merge(cfg)
    cfg = MergeConfig(base_model=str(base), experts=[{**_spec(base), "positive_images": ["/nope.png"]}],
                      experts_per_token=1)
    with pytest.raises(ConfigError, match="image /nope.png does not exist"):
        validate_merge(cfg)
    with pytest.raises(ConfigError, match="neither a local folder nor in the local cache"):
        validate_merge(MergeConfig(base_model="no/such-model", experts=[_spec(base)], experts_per_token=1))


def test_parallel_gate_vectors_warn_degenerate(tiny_model_dir, tmp_path, caplog) -> None:
    base = tiny_model_dir("llava")
    cfg = MergeConfig(base_model=str(base), experts=[_spec(base, ["a red cat"]), _spec(base, ["a red cat"])],
                      experts_per_token=1, out=str(tmp_path / "o"))
    with caplog.at_level(logging.WARNING, logger="moesaic.moe.gates"):
        result = merge(cfg)
    assert any("degenerate gates" in r.getMessage() for r in caplog.records)
    assert result.degenerate_layers == 2  # both layers


def test_cli_merge_reads_the_yaml_positional(tiny_model_dir, tmp_path, capsys) -> None:
    from moesaic.cli import main

    base = tiny_model_dir("idefics3")
    recipe = {"base_model": str(base), "gate_mode": "hidden_avg", "experts_per_token": 1,
              "experts": [{"source_model": str(base), "name": "cats", "positive_prompts": ["a photo of a cat"]},
                          {"source_model": str(base), "name": "counts", "positive_prompts": ["how many cars?"]}]}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "moe"
    assert main(["merge", str(tmp_path / "merge.yaml"), "--out", str(out), "--output-architecture", "generic"]) == 0
    assert "wrote generic MoE (2 experts, top-1" in capsys.readouterr().out
    saved = yaml.safe_load((out / "moesaic_config.yaml").read_text())
    assert saved["out"] == str(out) and saved["experts"][1]["name"] == "counts"
    assert json.loads((out / "config.json").read_text())["moesaic"]["experts"] == ["cats", "counts"]
    assert main(["merge", str(tmp_path / "merge.yaml"), "--out", str(out), "--experts-per-token", "3"]) == 2
    assert "experts_per_token=3 is larger" in capsys.readouterr().err
