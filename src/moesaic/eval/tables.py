"""The Markdown tables of an eval result (shared by results.md and the CLI's output) and number formatting."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.eval.results import EvalResult, ModelResult

__all__ = ["markdown_table", "dataset_table", "accuracy_label", "metric_columns", "metric_values", "fmt"]


def fmt(value: float | None, digits: int = 3) -> str:
    """Number for tables: fixed digits, '-' for unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


def metric_columns(models: "list[ModelResult]") -> list[str]:
    cols: list[str] = []
    for m in models:
        for d in m.datasets:
            names = [f"{d.dataset}.{k}" for k in d.metrics] + [f"{d.dataset}.field.{k}" for k in d.field_accuracy]
            names += [f"{d.dataset}.judge_agreement"] if d.judge_agreement is not None else []
            cols += [c for c in names if c not in cols]
    return cols


def metric_values(m: "ModelResult") -> dict[str, float]:
    values: dict[str, float] = {}
    for d in m.datasets:
        values.update({f"{d.dataset}.{k}": v for k, v in d.metrics.items()})
        values.update({f"{d.dataset}.field.{k}": v for k, v in d.field_accuracy.items()})
        if d.judge_agreement is not None:
            values[f"{d.dataset}.judge_agreement"] = d.judge_agreement
    return values


def accuracy_label(result: "EvalResult") -> str:
    """What the accuracy column and the plot's y axis are: the primary metric(s) the datasets were ranked by."""
    metrics = list(dict.fromkeys(d.primary_metric for m in result.models for d in m.datasets))
    if len(metrics) == 1:
        return f"accuracy ({metrics[0]})"
    return "accuracy (mean over datasets of: " + ", ".join(metrics) + ")"


def dataset_table(result: "EvalResult") -> str:
    """One row per dataset and model: the primary metric, the strict one beside it, and the judge if any."""
    judged = any(d.metrics.get("judge") is not None for m in result.models for d in m.datasets)
    head = ["dataset", "rows are", "ranked by", "model", "primary", "strict (metric)"]
    head += ["judge", "judge agrees"] if judged else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(dict.fromkeys(d.dataset for m in result.models for d in m.datasets))
    for name in names:
        for m in result.models:
            d = next((x for x in m.datasets if x.dataset == name), None)
            if d is None:
                continue
            strict = f"{fmt(d.strict)} ({d.strict_metric})" if d.strict_metric else "-"
            how = d.primary_metric + (" (config)" if d.chosen_by == "config" else "")
            cells = [name, d.rows, how, m.name, fmt(d.primary), strict]
            cells += [fmt(d.metrics.get("judge")), fmt(d.judge_agreement)] if judged else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(result: "EvalResult") -> str:
    """The headline table (one row per model, Pareto-front models starred), the per-dataset table (primary
    and strict metric side by side) and every metric per dataset."""
    head = ["model", accuracy_label(result), "p50 ms", "p95 ms", "tok/s", "peak MB", "cost/1k", "cache hits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result.models:
        star = " *" if m.name in result.pareto else ""
        cells = [f"{m.name}{star}", fmt(m.accuracy), fmt(m.latency_p50_s * 1000, 1), fmt(m.latency_p95_s * 1000, 1),
                 fmt(m.tokens_per_s, 1), fmt(m.memory_mb, 1), fmt(m.cost_per_1k, 4), str(m.cache_hits)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", dataset_table(result)]
    cols = metric_columns(result.models)
    if cols:
        lines += ["", "| model | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for m in result.models:
            values = metric_values(m)
            lines.append(f"| {m.name} | " + " | ".join(fmt(values.get(c)) for c in cols) + " |")
    return "\n".join(lines)
