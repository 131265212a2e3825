"""The ranking metric: chosen per dataset from its rows (or set), named in every report and on the plot,
with the strict metric beside a relaxed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesaic.cli import main
from moesaic.eval import EvalConfig, evaluate
from moesaic.eval.data import Sample
from moesaic.eval.plot import pareto_figure
from moesaic.eval.scoring import plan_dataset, row_kind
from moesaic.eval.tables import accuracy_label


def _qa(*refs: str) -> Sample:
    return Sample(id="x", image="x.png", question="q?", references=refs)


def _cfg(tmp_path: Path, **extra: object) -> EvalConfig:
    return EvalConfig.validated({"models": [{"name": "m", "model": "starter"}],
                                 "datasets": [{"name": "d", "path": str(tmp_path / "d.jsonl")}], **extra})


@pytest.mark.parametrize(
    ("refs", "kind"),
    [(("red",), "short answers"), (("a red shirt", "red"), "short answers"), (("12",), "numbers"),
     (("3.5%", "$4"), "numbers"), (("SALE 40%",), "short answers"), (("12", "twelve"), "short answers"),
     (("Fresh bread baked every morning",), "text")],
)
def test_row_kind(refs: tuple[str, ...], kind: str) -> None:
    assert row_kind(_qa(*refs)) == kind


def test_plan_follows_the_majority_of_rows_and_the_config(tmp_path: Path) -> None:
    config = _cfg(tmp_path)
    numbers = [_qa("12"), _qa("7.5"), _qa("red")]
    plan = plan_dataset(config, "charts", numbers)
    assert (plan.rows, plan.metric, plan.chosen_by, plan.strict) == ("numbers", "relaxed_numeric", "rows",
                                                                      "normalized_match")
    assert plan.describe() == ("charts: ranked by relaxed_numeric (default for numbers); "
                               "strict normalized_match beside it")
    assert plan_dataset(config, "t", [_qa("Fresh bread baked every morning")]).metric == "anls"
    attrs = [Sample(id="a", image="x.png", question="q", attributes={"color": "red"})]
    assert plan_dataset(config, "a", attrs).metric == "attribute_accuracy"
    # set in the config: it ranks every dataset it applies to; a strict primary needs no strict beside it
    fixed = plan_dataset(_cfg(tmp_path, primary_metric="exact_match"), "charts", numbers)
    assert (fixed.metric, fixed.chosen_by, fixed.strict) == ("exact_match", "config", None)
    # the default for these rows is not among the configured metrics: the first configured one that applies
    only = plan_dataset(_cfg(tmp_path, metrics=["token_f1", "anls"]), "charts", numbers)
    assert (only.metric, only.chosen_by) == ("token_f1", "rows")


def test_sentence_answers_ranked_by_the_relaxed_metric(tmp_path: Path, known_backends, qa_dataset, attr_dataset,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    data = {
        "models": [{"name": "verbose", "model": "verbose", "backend": "known"},
                   {"name": "lister", "model": "list", "backend": "known"}],
        "datasets": [{"name": "qa", "path": str(qa_dataset)}, {"name": "attrs", "path": str(attr_dataset)}],
        "out": str(tmp_path / "out"), "warmup": 0,
    }
    result = evaluate(EvalConfig.validated(data))
    verbose, lister = (result.model(n).datasets[0] for n in ("verbose", "lister"))
    # qa refs: red / [Blue, navy] / [The green one, greens]; "The main colour is <c> (100%), ..." names r and b
    assert (verbose.primary_metric, verbose.rows, verbose.chosen_by) == ("contains_match", "short answers", "rows")
    assert verbose.primary == pytest.approx(2 / 3) and verbose.strict == 0.0
    assert verbose.strict_metric == "normalized_match"
    assert lister.primary == 0.0  # "brown (54%), black (16%), red (15%)": red is not the main claim
    assert result.ranking == [
        "qa: ranked by contains_match (default for short answers); strict normalized_match beside it",
        "attrs: ranked by attribute_accuracy (default for attributes)",
    ]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| model | accuracy (mean over datasets of: contains_match, attribute_accuracy) |" in md
    assert "| qa | short answers | contains_match | verbose | 0.667 | 0.000 (normalized_match) |" in md
    assert "- qa: ranked by contains_match" in md
    fig = pareto_figure(result)
    ax = fig.axes[0]
    assert ax.get_ylabel() == accuracy_label(result) == \
        "accuracy (mean over datasets of: contains_match, attribute_accuracy)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["qa (contains_match)",
                                                                       "attrs (attribute_accuracy)"]
    dataset_points = [c.get_offsets().tolist() for c in ax.collections[1:3]]
    assert [p[1] for p in dataset_points[0]] == pytest.approx([2 / 3, 0.0])  # one marker per model per dataset
    assert dataset_points[0][0][0] == pytest.approx(verbose.latency_p50_s * 1000)  # at the dataset's latency
    # the CLI prints which metric ranked the models
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["eval", str(cfg)]) == 0
    assert "qa: ranked by contains_match (default for short answers)" in capsys.readouterr().out
