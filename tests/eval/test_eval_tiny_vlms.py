"""``moesaic eval`` on two real (tiny, random) VLMs, tiny Idefics3 and tiny LLaVA, loaded from disk by the
real backend: the CLI run, then a library re-run from the cache with references built from the models' actual
answers, so every metric has a value computed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from moesaic.backends.base import GenerationParams
from moesaic.backends.registry import load_backend
from moesaic.cli import main
from moesaic.eval import EvalConfig, evaluate
from moesaic.eval.answerers import BackendAnswerer
from moesaic.eval.data import Sample
from moesaic.eval.metrics import normalize_answer, squad_normalize

FAMILIES = ("idefics3", "llava")
GEN = {"max_new_tokens": 8}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _rows(refs: list[list[str]]) -> list[dict[str, object]]:
    images = ("red", "blue", "green")
    return [{"id": f"s{i}", "image": f"img/{c}.png", "question": f"What colour is picture {i}?", "references": r}
            for i, (c, r) in enumerate(zip(images, refs, strict=True))]


def _hand_computed(answers: list[str]) -> dict[str, float]:
    """References: s0 = the answer itself; s1 = the answer + " zq"; s2 = "#" (no word, one character).

    s0 scores 1 everywhere. s1: not equal; ANLS NL = 3 / (L + 3) with L its cleaned length, so 1 - NL =
    L / (L + 3) when L > 3; token F1 with n answer tokens: P = 1, R = n / (n + 1) → 2n / (2n + 1).
    s2: "#" normalises to no tokens (F1 0) and is ≥ half an edit away from any answer longer than 1 (ANLS 0).
    """
    a1 = " ".join(answers[1].strip().lower().split())
    n1 = len(squad_normalize(answers[1]).split())
    a2 = answers[2]
    # preconditions of the formulas (tiny random models babble long strings, so they hold)
    assert len(a1) > 3 and n1 >= 1 and len(a2.strip()) > 1 and squad_normalize(a2) and normalize_answer(a2), answers
    return {"exact_match": 1 / 3, "normalized_match": 1 / 3, "anls": (1 + len(a1) / (len(a1) + 3)) / 3,
            "token_f1": (1 + 2 * n1 / (2 * n1 + 1)) / 3}


def test_eval_tiny_idefics3_and_llava(tmp_path: Path, eval_tiny_vlms: dict[str, Path], images: dict[str, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    tiny_vlms = eval_tiny_vlms
    data = images["red"].parent.parent / "qa.jsonl"
    write_jsonl(data, _rows([["placeholder"]] * 3))
    config = {
        "models": [{"name": fam, "model": str(path), "dtype": "float32", "price_per_hour": 1.0}
                   for fam, path in tiny_vlms.items()],
        "datasets": [{"name": "colours", "path": str(data)}],
        "metrics": ["exact_match", "normalized_match", "anls", "token_f1"],
        "out": str(tmp_path / "out"),
        "generation": GEN,
    }
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["eval", str(cfg), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cache_hits"] == 0 and [m["model_calls"] for m in first["models"]] == [3, 3]
    out = tmp_path / "out"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    answers = {fam: [p["answer"] for p in preds if p["model"] == fam] for fam in FAMILIES}
    assert all(len(a) == 3 for a in answers.values())
    assert all(p["completion_tokens"] > 0 and p["latency_s"] > 0 for p in preds)

    # The reports hold both models; the plot is a real PNG.
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == list(FAMILIES) and all(r["samples"] == "3" for r in rows)
    md = (out / "results.md").read_text()
    assert all(f"| {fam}" in md for fam in FAMILIES)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "pareto.png")).ndim == 3

    # The answers are the backends' own: the same model answers the same way when asked directly.
    backends = {fam: load_backend(str(path)) for fam, path in tiny_vlms.items()}
    direct = BackendAnswerer(backends["llava"]).answer(
        Sample("s0", str(images["red"]), "What colour is picture 0?"), GenerationParams(**GEN))
    assert direct.text == answers["llava"][0]

    # Re-run with references built from each model's answers: everything comes from the cache.
    answerers = {fam: BackendAnswerer(b) for fam, b in backends.items()}
    results = {}
    for fam in FAMILIES:
        a = answers[fam]
        write_jsonl(data, _rows([[a[0]], [a[1].strip() + " zq"], ["#"]]))
        one = EvalConfig.validated({**config, "models": [m for m in config["models"] if m["name"] == fam]})
        results[fam] = evaluate(one, answerers={fam: answerers[fam]})
    for fam, result in results.items():
        m = result.models[0]
        assert result.cache_hits == 3 and m.model_calls == 0 and answerers[fam].calls == 0
        assert m.datasets[0].metrics == pytest.approx(_hand_computed(answers[fam]))
        assert m.peak_rss_mb is not None and m.peak_rss_mb > 50
        assert m.cost_per_1k == pytest.approx(m.latency_mean_s * 1000 / 3600)

