"""The real-decoder quality study's plumbing on a tiny random Llama (not the GGUF): every stage, the
validation → committed selection → test protocol, the results JSON's shape and the MLP-only invariant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesaic.errors import ConfigError
from moesaic.eval.quality_real import RealStudyConfig, real_quality_study, selection_hash
from moesaic.eval.quality_real.domains import TEXT_DOMAINS, write_split
from moesaic.eval.quality_real.scoring import bootstrap_retention, build_targets, wilson


def test_wilson_and_paired_bootstrap() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    same = {"a": [True, False] * 10, "b": [True] * 20}
    boot = bootstrap_retention(same, same, samples=50)
    assert boot["mean"] == [1.0, 1.0] and boot["per_domain"]["a"] == [1.0, 1.0]
    half = bootstrap_retention({"a": [True, False] * 10}, {"a": [True] * 20}, samples=200)
    assert half["per_domain"]["a"][0] < 0.5 < half["per_domain"]["a"][1]


def test_splits_differ_and_eval_questions_are_paraphrases(tmp_path: Path) -> None:
    for name, dom in TEXT_DOMAINS.items():
        rows = {s: [json.loads(x) for x in write_split(tmp_path / f"{name}-{s}.jsonl", name, s, 30, 0)
                    .read_text().splitlines()] for s in ("train", "validation", "test")}
        asked = {s: {r["question"].splitlines()[-1] for r in rs} for s, rs in rows.items()}
        assert asked["train"] <= set(dom.train_questions) and asked["test"] <= set(dom.eval_questions)
        assert not asked["train"] & asked["validation"]
        assert {r["question"] for r in rows["validation"]} != {r["question"] for r in rows["test"]}


def test_garment_rows_are_scored_field_by_field(tmp_path: Path) -> None:
    from moesaic.finetune.text import TextProcessor
    from moesaic.testing.causal import tiny_causal_tokenizer

    tok = tiny_causal_tokenizer()
    rows = [json.loads(x) for x in write_split(tmp_path / "g.jsonl", "garment", "test", 5, 0).read_text().splitlines()]
    scored = build_targets(tok, TextProcessor(tok), rows)
    for row, s in zip(rows, scored):
        assert [t.field for t in s.targets] == ["type", "colour", "sleeve", "pattern"]
        ids = tok(s.text, add_special_tokens=False)["input_ids"]
        for t in s.targets:  # the token after the scored position is the gold value's first token
            value = json.loads(row["answer"])[t.field]
            assert ids[len(ids) - t.back + 1] == t.candidates[t.gold] == tok(value)["input_ids"][0]


@pytest.mark.slow
def test_tiny_study_runs_every_stage_and_keeps_the_protocol(tmp_path: Path) -> None:
    sel, res = tmp_path / "selection.json", tmp_path / "results.json"
    common = {"out": str(tmp_path / "run"), "base": "tiny", "domains": ["garment", "sign"], "train_rows": 8,
              "validation_rows": 4, "test_rows": 4, "steps": 2, "batch_size": 4, "upper_layers": 1,
              "ties_densities": [0.5], "dare_densities": [0.3, 0.7], "selection": str(sel), "results": str(res),
              "bootstrap_samples": 20, "gate_prompts": 2, "routing_rows": 2}
    with pytest.raises(ConfigError, match="no selection file"):
        real_quality_study(RealStudyConfig(**common, stage="test", require_committed=False))
    selection = real_quality_study(RealStudyConfig(**common, stage="validation"))
    assert sel.is_file() and selection["choices"]["dare_ties"]["density"] in (0.3, 0.7)
    assert all(v < 1e-3 for v in selection["invariant_max_logit_diff"].values())
    assert len(selection["invariant_max_logit_diff"]) == 2
    assert all(Path(p).is_file() for p in selection["routing_heatmaps"].values())
    assert set(selection["routing_heatmaps"]) == {"moe_token", "mlp/moe_token"}
    with pytest.raises(ConfigError, match="not committed"):  # tmp_path is no git repository
        real_quality_study(RealStudyConfig(**common, stage="test"))
    result = real_quality_study(RealStudyConfig(**common, stage="test", require_committed=False))
    assert json.loads(res.read_text()) == result
    assert result["settings"]["selection_sha256"] == selection_hash(sel)
    phase = result["phases"]["A"]
    assert phase["rows_per_domain"] == {"validation": 4, "test": 4}
    for split in ("validation", "test"):
        table = phase[split]
        for name in ("base", "moe_token", "moe_k2", "oracle", "average", "ties", "dare_ties", "mlp/oracle"):
            assert set(table[name]) == {"garment", "sign"}, name
        assert set(table["expert:garment"]) == {"garment"}
        assert set(table["expert:garment"]["garment"]["fields"]) == {"type", "colour", "sleeve", "pattern"}
        for d in ("garment", "sign"):  # the MLP-only invariant: oracle routing reproduces the expert
            assert table["mlp/oracle"][d]["accuracy"] == table[f"mlp/expert:{d}"][d]["accuracy"]
            assert table["mlp/oracle"][d].get("fields") == table[f"mlp/expert:{d}"][d].get("fields")
            cell = table["moe_token"][d]
            assert 0.0 <= cell["wilson_95"][0] <= cell["accuracy"] <= cell["wilson_95"][1] <= 1.0
        assert "mean" in phase["summary"][split]["moe_token"]["bootstrap_95"]


def test_batched_scoring_matches_one_row_at_a_time(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from moesaic.finetune.model import load_processor
    from moesaic.eval.quality_real.scoring import score_rows
    from moesaic.testing.causal import make_tiny_causal_lm

    base = make_tiny_causal_lm(tmp_path / "lm", initializer_range=0.3, hidden_size=32, intermediate_size=64,
                               head_dim=8)
    processor = load_processor(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    rows = [json.loads(x) for d in ("garment", "sign", "chart")
            for x in write_split(tmp_path / f"{d}.jsonl", d, "validation", 3, 0).read_text().splitlines()]
    scored = build_targets(processor.tokenizer, processor, rows)
    one = score_rows(model, processor.tokenizer, scored, batch_size=1)
    assert score_rows(model, processor.tokenizer, scored, batch_size=4) == one  # left padding, length-sorted
    assert [len(m) for m in one] == [4, 4, 4, 1, 1, 1, 1, 1, 1]
