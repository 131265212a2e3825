"""``moesaic eval`` end to end with backends whose answers are known: metric values computed by hand,
reports and plot written, the cache reused on a re-run, and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from moesaic.cli import main
from moesaic.errors import ConfigError
from moesaic.eval import EvalConfig, ModelResult, evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Model "colour" answers red / blue / green (and JSON {"color": c, "size": "small"} for attributes);
# model "constant" always answers "red" (and "color: red"). By hand, per QA sample (r, b, g):
#   colour:   exact 1,0,0  normalized 1,1,0  anls 1,1,5/6 (NL(green, greens) = 1/6)  f1 1,1,2/3
#   constant: exact 1,0,0  normalized 1,0,0  anls 1,0,0                                f1 1,0,0
# Attributes (p1 red/small, p2 blue/large): colour gets color 1,1 size 1,0; constant gets color 1,0 size 0,0.
EXPECTED = {
    "colour": {"qa": {"exact_match": 1 / 3, "normalized_match": 2 / 3, "anls": 17 / 18, "token_f1": 8 / 9},
               "fields": {"color": 1.0, "size": 0.5}, "attr": 0.75},
    "constant": {"qa": {"exact_match": 1 / 3, "normalized_match": 1 / 3, "anls": 1 / 3, "token_f1": 1 / 3},
                 "fields": {"color": 0.5, "size": 0.0}, "attr": 0.25},
}


def _config(tmp_path: Path, qa: Path, attrs: Path, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "models": [
            {"name": "colour", "model": "color", "backend": "known", "price_per_hour": 1.8},
            {"name": "constant", "model": "constant@0.03", "backend": "known", "price_per_hour": 3.6},
        ],
        "datasets": [{"name": "qa", "path": str(qa)}, {"name": "attrs", "path": str(attrs)}],
        "primary_metric": "normalized_match",
        "out": str(tmp_path / "out"),
        "generation": {"max_new_tokens": 16},
    }
    data.update(extra)
    return data


def _check_scores(result_models: dict[str, object]) -> None:
    for name, exp in EXPECTED.items():
        m = result_models[name]
        qa = next(d for d in m.datasets if d.dataset == "qa")
        attrs = next(d for d in m.datasets if d.dataset == "attrs")
        for metric, value in exp["qa"].items():
            assert qa.metrics[metric] == pytest.approx(value), (name, metric)
        assert attrs.field_accuracy == pytest.approx(exp["fields"])
        assert attrs.metrics["attribute_accuracy"] == pytest.approx(exp["attr"])
        assert m.accuracy == pytest.approx((exp["qa"]["normalized_match"] + exp["attr"]) / 2)


def test_evaluate_scores_reports_and_cache(tmp_path: Path, known_backends, qa_dataset, attr_dataset) -> None:
    config = EvalConfig.validated(_config(tmp_path, qa_dataset, attr_dataset))
    result = evaluate(config)
    models = {m.name: m for m in result.models}
    _check_scores(models)
    colour_backend, constant_backend = known_backends.instances
    # 5 timed calls each, plus one untimed warm-up call per dataset (the default warmup: 1)
    assert (colour_backend.calls, constant_backend.calls) == (7, 7)
    assert colour_backend.params_seen[0].max_new_tokens == 16

    const = models["constant"]
    assert const.samples == 5 and const.cache_hits == 0 and const.model_calls == 5
    assert const.load_s is not None and const.load_s >= 0
    assert const.latency_p50_s >= 0.03 and const.latency_p95_s >= const.latency_p50_s
    assert const.cost_per_1k == pytest.approx(3.6 * const.latency_mean_s * 1000 / 3600)
    assert const.peak_rss_mb is not None and const.peak_rss_mb > 10
    # tokens/s = completion tokens / generation seconds: "red" ×3 (1 word) + "color: red" ×2 (2 words) = 7
    assert const.tokens_per_s == pytest.approx(7 / (const.latency_mean_s * 5))
    # colour is both more accurate and faster: it alone is on the Pareto front
    assert models["colour"].latency_p50_s < const.latency_p50_s
    assert result.pareto == ["colour"]

    out = Path(result.out)
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "pareto.png")).shape[:2] == (500, 700)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == ["colour", "constant"]
    assert float(rows[0]["qa.anls"]) == pytest.approx(17 / 18)
    assert float(rows[1]["attrs.field.color"]) == pytest.approx(0.5)
    md = (out / "results.md").read_text()
    assert "| colour * | 0.708 |" in md and "| constant | 0.292 |" in md
    saved = json.loads((out / "results.json").read_text())
    assert saved["models"][0]["datasets"][0]["metrics"]["token_f1"] == pytest.approx(8 / 9)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and {p["answer"] for p in preds if p["model"] == "colour" and p["dataset"] == "qa"} \
        == {"red", "blue", "green"}
    assert yaml.safe_load((out / "moesaic_config.yaml").read_text())["primary_metric"] == "normalized_match"

    # Re-run: every sample from the cache; models are not even loaded, so no backend is called.
    again = evaluate(config)
    assert again.cache_hits == 10
    assert all(m.cache_hits == m.samples == 5 and m.model_calls == 0 and m.load_s is None for m in again.models)
    assert len(known_backends.instances) == 2 and (colour_backend.calls, constant_backend.calls) == (7, 7)
    _check_scores({m.name: m for m in again.models})
    assert again.model("constant").latency_p50_s == pytest.approx(const.latency_p50_s)
    assert again.model("constant").peak_rss_mb == pytest.approx(const.peak_rss_mb)


def test_resume_after_interruption_and_param_change(tmp_path: Path, known_backends, qa_dataset, attr_dataset) -> None:
    data = _config(tmp_path, qa_dataset, attr_dataset)
    data["models"] = data["models"][:1]  # type: ignore[index]
    evaluate(EvalConfig.validated(data))
    cache = tmp_path / "out" / "cache.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 5
    cache.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # lost the last answer, tore the 4th
    resumed = evaluate(EvalConfig.validated(data))
    assert resumed.cache_hits == 3 and resumed.models[0].model_calls == 2
    assert known_backends.instances[-1].calls == 2 + 1  # + warm-up
    assert resumed.models[0].datasets[0].metrics["anls"] == pytest.approx(17 / 18)
    # Other generation params → other cache keys: everything is asked again.
    changed = evaluate(EvalConfig.validated({**data, "generation": {"max_new_tokens": 8}, "warmup": 0}))
    assert changed.cache_hits == 0 and known_backends.instances[-1].calls == 5
    # max_samples takes the first rows of each dataset (here all cached from the previous run).
    few = evaluate(EvalConfig.validated({**data, "generation": {"max_new_tokens": 8}, "max_samples": 1,
                                         "warmup": 0}))
    assert few.cache_hits == 2 and few.models[0].samples == 2
    assert few.models[0].datasets[0].metrics["exact_match"] == 1.0  # sample "r": red == red


def test_cli_eval(tmp_path: Path, known_backends, qa_dataset, attr_dataset, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, qa_dataset, attr_dataset)))
    assert main(["eval", str(cfg), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cache_hits"] == 0 and printed["pareto"] == ["colour"]
    _check_scores({x["name"]: ModelResult.model_validate(x) for x in printed["models"]})
    assert (tmp_path / "out" / "results.md").is_file()
    # Flags override the file: a second run with another out folder and max_samples.
    assert main(["eval", str(cfg), "--out", str(tmp_path / "out2"), "--max-samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "| colour * |" in text and "cache hits: 0" in text
    rows = list(csv.DictReader((tmp_path / "out2" / "results.csv").open()))
    assert [r["samples"] for r in rows] == ["4", "4"]
    # The same config again: all cached.
    assert main(["eval", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache_hits"] == 10


def test_errors_name_the_problem(tmp_path: Path, known_backends, qa_dataset, attr_dataset,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "data" / "bad.jsonl"
    bad.write_text('{"image": "img/red.png", "question": "q?", "reference": "red"}\n'
                   '{"image": "img/missing.png", "question": "q?", "reference": "red"}\n')
    data = _config(tmp_path, qa_dataset, attr_dataset, datasets=[{"name": "bad", "path": str(bad)}])
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: image 'img/missing.png' not found"):
        evaluate(EvalConfig.validated(data))
    assert known_backends.instances == []  # validated before any model was loaded
    with pytest.raises(ConfigError, match="give 'model' \(a local model\) or 'endpoint'"):
        EvalConfig.validated({**data, "models": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="repeated: colour"):
        EvalConfig.validated({**data, "models": [data["models"][0]] * 2})  # type: ignore[index]
    only_text = _config(tmp_path, qa_dataset, attr_dataset, metrics=["anls"])
    with pytest.raises(ConfigError, match="'attrs' has attributes rows but no configured metric"):
        evaluate(EvalConfig.validated(only_text))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["eval", str(cfg)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_cache_follows_image_content_and_question(tmp_path: Path, known_backends, qa_dataset, attr_dataset,
                                                  images: dict[str, Path]) -> None:
    data = _config(tmp_path, qa_dataset, attr_dataset, datasets=[{"name": "qa", "path": str(qa_dataset)}])
    data["models"] = data["models"][:1]  # type: ignore[index]
    assert evaluate(EvalConfig.validated(data)).models[0].datasets[0].metrics["exact_match"] == pytest.approx(1 / 3)
    blue = images["blue"].read_bytes()
    images["red"].write_bytes(blue)  # same path, other picture: asked again, now answered "blue"
    again = evaluate(EvalConfig.validated(data))
    assert again.cache_hits == 2 and known_backends.instances[-1].calls == 1 + 1  # + warm-up
    assert again.models[0].datasets[0].metrics["exact_match"] == 0.0  # r: "blue" ≠ "red"
    rows = [json.loads(line) for line in qa_dataset.read_text().splitlines()]
    rows[2]["question"] = "Which colour?"
    qa_dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert evaluate(EvalConfig.validated(data)).cache_hits == 2  # g's question changed


@pytest.mark.parametrize(("warmup", "first_is_slow"), [(0, True), (1, False)])
def test_warmup_keeps_cold_start_out_of_latency(tmp_path: Path, known_backends, qa_dataset, attr_dataset,
                                                warmup: int, first_is_slow: bool) -> None:
    data = _config(tmp_path, qa_dataset, attr_dataset, warmup=warmup,
                   models=[{"name": "cold", "model": "cold@0.25", "backend": "known"}],
                   datasets=[{"name": "qa", "path": str(qa_dataset)}])
    m = evaluate(EvalConfig.validated(data)).models[0]
    assert known_backends.instances[-1].calls == 3 + warmup and m.model_calls == 3
    # p95 of 3 latencies interpolates 90% of the way to the largest: > 0.2 s only if the slow call was timed
    assert (m.latency_p95_s > 0.2) is first_is_slow
    assert m.latency_p50_s < 0.1


def test_answerers_must_name_configured_models(tmp_path: Path, known_backends, qa_dataset, attr_dataset) -> None:
    data = _config(tmp_path, qa_dataset, attr_dataset)
    with pytest.raises(ConfigError, match="answerers given for models not in the config: typo"):
        evaluate(EvalConfig.validated(data), answerers={"typo": known_backends("color")})
