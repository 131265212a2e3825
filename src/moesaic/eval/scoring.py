"""Scoring: which metric ranks each dataset (chosen from its rows), per-sample scores, and their means.

The primary metric of a dataset — the one behind its accuracy and the plot — is, unless ``primary_metric``
is set, chosen from what its references are:

- attribute rows → ``attribute_accuracy``;
- numbers (``12``, ``3.5%``, ``$40``) → ``relaxed_numeric`` (ChartQA: within 5 %);
- short answers (three words or fewer) → ``contains_match`` (the reference as the answer's main claim);
- longer text (a sentence to read or write) → ``anls`` (partial credit per character, ST-VQA).

A dataset takes the kind most of its question rows have. Whenever the primary metric is a relaxed one, the
strict ``normalized_match`` is computed too and reported beside it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from moesaic.errors import ConfigError
from moesaic.eval.config import EvalConfig
from moesaic.eval.data import Sample
from moesaic.eval.matching import contains_match, parse_number, relaxed_numeric
from moesaic.eval.metrics import (
    MetricName,
    anls,
    attribute_accuracy,
    exact_match,
    normalized_match,
    parse_attributes,
    token_f1,
)

__all__ = ["DatasetPlan", "RowKind", "TEXT_METRICS", "STRICT_METRIC", "applicable_metrics", "row_kind",
           "plan_dataset", "score_sample", "mean_scores", "check_metrics"]

RowKind = Literal["short answers", "numbers", "text", "attributes"]

TEXT_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "contains_match": contains_match,
    "relaxed_numeric": relaxed_numeric,
    "anls": anls,
    "token_f1": token_f1,
}
STRICT_METRIC: MetricName = "normalized_match"
_STRICT = frozenset({"exact_match", "normalized_match", "attribute_accuracy"})
DEFAULT_FOR: dict[str, MetricName] = {"short answers": "contains_match", "numbers": "relaxed_numeric",
                                      "text": "anls", "attributes": "attribute_accuracy"}
_SHORT_WORDS = 3


@dataclass(frozen=True)
class DatasetPlan:
    """How one dataset is scored: ``metric`` ranks its question rows (attribute rows always use
    ``attribute_accuracy``); ``strict`` is reported beside a relaxed ``metric``."""

    name: str
    rows: RowKind
    metric: MetricName
    chosen_by: Literal["rows", "config"]
    strict: MetricName | None

    def describe(self) -> str:
        how = "set by primary_metric" if self.chosen_by == "config" else f"default for {self.rows}"
        strict = f"; strict {self.strict} beside it" if self.strict else ""
        return f"{self.name}: ranked by {self.metric} ({how}){strict}"


def applicable_metrics(metrics: Sequence[MetricName], kind: str) -> list[MetricName]:
    """Text metrics score question rows; ``attribute_accuracy`` scores attribute rows."""
    if kind == "attributes":
        return [m for m in metrics if m == "attribute_accuracy"]
    return [m for m in metrics if m != "attribute_accuracy"]


def row_kind(sample: Sample) -> RowKind:
    """What a row asks for, read from its references (see the module docstring)."""
    if sample.kind == "attributes":
        return "attributes"
    if all(parse_number(r) is not None for r in sample.references):
        return "numbers"
    if all(len(r.split()) <= _SHORT_WORDS for r in sample.references):
        return "short answers"
    return "text"


def plan_dataset(config: EvalConfig, name: str, samples: Sequence[Sample]) -> DatasetPlan:
    """Choose the dataset's primary metric: ``config.primary_metric`` when it applies, else the default for
    the kind most of its rows are (falling back to the first configured metric that applies)."""
    kinds = Counter(row_kind(s) for s in samples if s.kind == "qa")
    if not kinds:
        return DatasetPlan(name, "attributes", "attribute_accuracy", "rows", None)
    rows: RowKind = max(kinds, key=lambda k: (kinds[k], -list(DEFAULT_FOR).index(k)))
    usable = applicable_metrics(config.metrics, "qa")
    if config.primary_metric is not None and config.primary_metric in usable:
        metric, chosen_by = config.primary_metric, "config"
    else:
        default = DEFAULT_FOR[rows]
        metric, chosen_by = (default if default in usable else usable[0]), "rows"
    strict = None if metric in _STRICT else STRICT_METRIC
    return DatasetPlan(name, rows, metric, chosen_by, strict)  # type: ignore[arg-type]


def check_metrics(config: EvalConfig, datasets: dict[str, list[Sample]]) -> None:
    """Fail before loading models when a dataset has no metric that can score it."""
    for name, samples in datasets.items():
        for kind in sorted({s.kind for s in samples}):
            if not applicable_metrics(config.metrics, kind):
                need = "attribute_accuracy" if kind == "attributes" else "a text metric (e.g. contains_match)"
                raise ConfigError(f"dataset {name!r} has {kind} rows but no configured metric scores them",
                                  f"add {need} to metrics")


def score_sample(config: EvalConfig, plan: DatasetPlan, sample: Sample,
                 answer: str) -> tuple[dict[str, float], dict[str, float], float]:
    """(metric scores, per-field attribute scores, primary score) of one answer. The plan's primary and
    strict metrics are always scored, listed in ``config.metrics`` or not."""
    if sample.kind == "attributes":
        fields = attribute_accuracy(parse_attributes(answer), sample.attributes)
        accuracy = sum(fields.values()) / len(fields)
        return {"attribute_accuracy": accuracy}, fields, accuracy
    wanted = [*applicable_metrics(config.metrics, "qa"), plan.metric, *([plan.strict] if plan.strict else [])]
    scores: dict[str, float] = {}
    for metric in dict.fromkeys(wanted):
        if metric == "anls":
            scores[metric] = anls(answer, sample.references, config.anls_threshold)
        else:
            scores[metric] = TEXT_METRICS[metric](answer, sample.references)
    return scores, {}, scores[plan.metric]


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the rows that have the key."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for key, value in row.items():
            sums[key] += value
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}
