"""Scoring: which metrics apply to which dataset, per-sample scores, and their means."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from moesaic.errors import ConfigError
from moesaic.eval.config import EvalConfig
from moesaic.eval.data import Sample
from moesaic.eval.metrics import TEXT_METRICS, MetricName, anls, attribute_accuracy, parse_attributes

__all__ = ["applicable_metrics", "primary_metric", "score_sample", "mean_scores", "check_metrics"]


def applicable_metrics(metrics: Sequence[MetricName], kind: str) -> list[MetricName]:
    """Text metrics score question rows; ``attribute_accuracy`` scores attribute rows."""
    if kind == "attributes":
        return [m for m in metrics if m == "attribute_accuracy"]
    return [m for m in metrics if m != "attribute_accuracy"]


def primary_metric(config: EvalConfig, kind: str) -> MetricName:
    """The configured primary metric when it applies to ``kind``, else the first configured one that does."""
    usable = applicable_metrics(config.metrics, kind)
    if config.primary_metric is not None and config.primary_metric in usable:
        return config.primary_metric
    return usable[0]


def check_metrics(config: EvalConfig, datasets: dict[str, list[Sample]]) -> None:
    """Fail before loading models when a dataset has no metric that can score it."""
    for name, samples in datasets.items():
        for kind in sorted({s.kind for s in samples}):
            if not applicable_metrics(config.metrics, kind):
                need = "attribute_accuracy" if kind == "attributes" else "a text metric (e.g. normalized_match)"
                raise ConfigError(f"dataset {name!r} has {kind} rows but no configured metric scores them",
                                  f"add {need} to metrics")


def score_sample(config: EvalConfig, sample: Sample, answer: str) -> tuple[dict[str, float], dict[str, float]]:
    """(metric scores, per-field attribute scores) of one answer."""
    if sample.kind == "attributes":
        fields = attribute_accuracy(parse_attributes(answer), sample.attributes)
        scores = {"attribute_accuracy": sum(fields.values()) / len(fields)}
        return {m: scores[m] for m in applicable_metrics(config.metrics, "attributes")}, fields
    scores = {}
    for metric in applicable_metrics(config.metrics, "qa"):
        if metric == "anls":
            scores[metric] = anls(answer, sample.references, config.anls_threshold)
        else:
            scores[metric] = TEXT_METRICS[metric](answer, sample.references)
    return scores, {}


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the rows that have the key."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for key, value in row.items():
            sums[key] += value
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}
