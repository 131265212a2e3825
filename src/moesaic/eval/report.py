"""Eval reports: results.json, results.csv, results.md and predictions.jsonl, each written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from moesaic.atomic import atomic_write_text
from moesaic.eval.results import EvalResult, SampleRecord
from moesaic.eval.tables import markdown_table, metric_columns, metric_values

__all__ = ["csv_rows", "write_reports", "REPORT_FILES"]

REPORT_FILES = {"json": "results.json", "csv": "results.csv", "markdown": "results.md",
                "predictions": "predictions.jsonl"}

_HEADLINE = ("model", "kind", "samples", "cache_hits", "load_s", "accuracy", "latency_p50_s", "latency_p95_s",
             "latency_mean_s", "tokens_per_s", "peak_rss_mb", "cuda_peak_mb", "price_per_hour", "cost_per_1k")


def csv_rows(result: EvalResult) -> list[dict[str, object]]:
    """One row per model: the headline numbers, then ``dataset.metric`` and ``dataset.field.name`` columns."""
    cols = metric_columns(result.models)
    rows = []
    for m in result.models:
        row: dict[str, object] = {
            "model": m.name, "kind": m.kind, "samples": m.samples, "cache_hits": m.cache_hits, "load_s": m.load_s,
            "accuracy": m.accuracy, "latency_p50_s": m.latency_p50_s, "latency_p95_s": m.latency_p95_s,
            "latency_mean_s": m.latency_mean_s, "tokens_per_s": m.tokens_per_s, "peak_rss_mb": m.peak_rss_mb,
            "cuda_peak_mb": m.cuda_peak_mb, "price_per_hour": m.price_per_hour, "cost_per_1k": m.cost_per_1k,
        }
        values = metric_values(m)
        row.update({c: values.get(c) for c in cols})
        rows.append(row)
    return rows


def _csv_text(result: EvalResult) -> str:
    rows = csv_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_HEADLINE) + metric_columns(result.models), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def write_reports(result: EvalResult, records: list[SampleRecord], out: Path) -> dict[str, str]:
    """Write every text report into ``out``; returns name → path."""
    paths = {name: out / filename for name, filename in REPORT_FILES.items()}
    atomic_write_text(paths["json"], result.model_dump_json(indent=2) + "\n")
    atomic_write_text(paths["csv"], _csv_text(result))
    ranking = "".join(f"- {line}\n" for line in result.ranking)
    judge = ""
    if result.judge:
        judge = (f"\nJudge: {result.judge['model']} (prompt {result.judge['prompt_version']}); 'judge agrees' is the "
                 "share of question rows where its verdict and the primary metric agree.\n")
    md = ("# moesaic eval\n\n" + markdown_table(result) + "\n\n`*` = on the accuracy/latency Pareto front\n\n"
          "Which metric ranked the models (accuracy = mean over datasets of their primary metric):\n\n"
          + ranking + judge)
    atomic_write_text(paths["markdown"], md)
    lines = [json.dumps(r.model_dump(mode="json"), ensure_ascii=False) for r in records]
    atomic_write_text(paths["predictions"], "\n".join(lines) + ("\n" if lines else ""))
    return {name: str(path) for name, path in paths.items()}
