"""Eval reports: results.json, results.csv, results.md and predictions.jsonl, each written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from moesaic.atomic import atomic_write_text
from moesaic.eval.results import EvalResult, ModelResult, SampleRecord, fmt

__all__ = ["markdown_table", "csv_rows", "write_reports", "REPORT_FILES"]

REPORT_FILES = {"json": "results.json", "csv": "results.csv", "markdown": "results.md",
                "predictions": "predictions.jsonl"}

_HEADLINE = ("model", "kind", "samples", "cache_hits", "load_s", "accuracy", "latency_p50_s", "latency_p95_s",
             "latency_mean_s", "tokens_per_s", "peak_rss_mb", "cuda_peak_mb", "price_per_hour", "cost_per_1k")


def _metric_columns(models: list[ModelResult]) -> list[str]:
    cols: list[str] = []
    for m in models:
        for d in m.datasets:
            names = [f"{d.dataset}.{k}" for k in d.metrics] + [f"{d.dataset}.field.{k}" for k in d.field_accuracy]
            cols += [c for c in names if c not in cols]
    return cols


def _metric_values(m: ModelResult) -> dict[str, float]:
    values: dict[str, float] = {}
    for d in m.datasets:
        values.update({f"{d.dataset}.{k}": v for k, v in d.metrics.items()})
        values.update({f"{d.dataset}.field.{k}": v for k, v in d.field_accuracy.items()})
    return values


def csv_rows(result: EvalResult) -> list[dict[str, object]]:
    """One row per model: the headline numbers, then ``dataset.metric`` and ``dataset.field.name`` columns."""
    cols = _metric_columns(result.models)
    rows = []
    for m in result.models:
        row: dict[str, object] = {
            "model": m.name, "kind": m.kind, "samples": m.samples, "cache_hits": m.cache_hits, "load_s": m.load_s,
            "accuracy": m.accuracy, "latency_p50_s": m.latency_p50_s, "latency_p95_s": m.latency_p95_s,
            "latency_mean_s": m.latency_mean_s, "tokens_per_s": m.tokens_per_s, "peak_rss_mb": m.peak_rss_mb,
            "cuda_peak_mb": m.cuda_peak_mb, "price_per_hour": m.price_per_hour, "cost_per_1k": m.cost_per_1k,
        }
        values = _metric_values(m)
        row.update({c: values.get(c) for c in cols})
        rows.append(row)
    return rows


def _csv_text(result: EvalResult) -> str:
    rows = csv_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_HEADLINE) + _metric_columns(result.models), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def markdown_table(result: EvalResult) -> str:
    """The headline table (one row per model, Pareto-front models starred) and per-dataset metrics."""
    head = ["model", "accuracy", "p50 ms", "p95 ms", "tok/s", "peak MB", "cost/1k", "cache hits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result.models:
        star = " *" if m.name in result.pareto else ""
        cells = [f"{m.name}{star}", fmt(m.accuracy), fmt(m.latency_p50_s * 1000, 1), fmt(m.latency_p95_s * 1000, 1),
                 fmt(m.tokens_per_s, 1), fmt(m.memory_mb, 1), fmt(m.cost_per_1k, 4), str(m.cache_hits)]
        lines.append("| " + " | ".join(cells) + " |")
    cols = _metric_columns(result.models)
    if cols:
        lines += ["", "| model | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for m in result.models:
            values = _metric_values(m)
            lines.append(f"| {m.name} | " + " | ".join(fmt(values.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write_reports(result: EvalResult, records: list[SampleRecord], out: Path) -> dict[str, str]:
    """Write every text report into ``out``; returns name → path."""
    paths = {name: out / filename for name, filename in REPORT_FILES.items()}
    atomic_write_text(paths["json"], result.model_dump_json(indent=2) + "\n")
    atomic_write_text(paths["csv"], _csv_text(result))
    md = "# moesaic eval\n\n" + markdown_table(result) + "\n\n`*` = on the accuracy/latency Pareto front\n"
    atomic_write_text(paths["markdown"], md)
    lines = [json.dumps(r.model_dump(mode="json"), ensure_ascii=False) for r in records]
    atomic_write_text(paths["predictions"], "\n".join(lines) + ("\n" if lines else ""))
    return {name: str(path) for name, path in paths.items()}
