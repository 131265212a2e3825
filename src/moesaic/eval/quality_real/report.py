"""Turning per-row scores into the study's results: accuracy with Wilson intervals, retention with paired
bootstrap intervals, per-field accuracy for JSON domains, and a plain-text table."""

from __future__ import annotations

from typing import Any

from moesaic.eval.quality_real.scoring import bootstrap_retention, wilson

__all__ = ["accuracy_of", "results_phase", "render"]


def _exact(rows: list[dict[str, bool]]) -> list[bool]:
    return [all(r.values()) for r in rows]


def accuracy_of(rows: list[dict[str, bool]]) -> float:
    marks = _exact(rows)
    return sum(marks) / len(marks) if marks else 0.0


def _public(name: str) -> str:
    """``ties@0.7`` → ``ties`` (the chosen density is in the settings)."""
    return name.split("@")[0]


def _split_table(config: Any, scores: dict[str, dict[str, list[dict[str, bool]]]], seed: int,
                 samples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    table: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for name, by_domain in scores.items():
        prefix = name.split("/")[0] + "/" if "/" in name else ""
        row: dict[str, Any] = {}
        for d, rows in by_domain.items():
            marks = _exact(rows)
            k, n = sum(marks), len(marks)
            own = scores.get(f"{prefix}expert:{d}", {}).get(d)
            own_acc = accuracy_of(own) if own else 0.0
            cell: dict[str, Any] = {"accuracy": k / n, "retention": (k / n / own_acc) if own_acc else None,
                                    "wilson_95": list(wilson(k, n)), "n": n}
            if len(rows[0]) > 1:  # JSON: per-field accuracy
                cell["fields"] = {f: sum(r[f] for r in rows) / n for f in rows[0]}
            row[d] = cell
        table[_public(name)] = row
        experts = {d: scores.get(f"{prefix}expert:{d}", {}).get(d) for d in by_domain}
        if len(by_domain) == len(config.domains) and all(experts.values()) and ":" not in name:
            merged = {d: _exact(by_domain[d]) for d in by_domain}
            own = {d: _exact(experts[d]) for d in by_domain}  # type: ignore[arg-type]
            rets = [row[d]["retention"] or 0.0 for d in by_domain]
            summary[_public(name)] = {"mean_retention": sum(rets) / len(rets), "min_retention": min(rets),
                                      "bootstrap_95": bootstrap_retention(merged, own, samples, seed)}
    return table, summary


def results_phase(config: Any, selection: dict[str, Any], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``P`` of the results JSON: domains, rows per domain, and ``R`` per split (plus retention summaries)."""
    phase: dict[str, Any] = {"domains": list(config.domains),
                             "rows_per_domain": {"validation": config.validation_rows, "test": config.test_rows},
                             "choices": selection["choices"], "summary": {}}
    for split, by_model in scores.items():
        phase[split], phase["summary"][split] = _split_table(config, by_model, config.seed, config.bootstrap_samples)
    return phase


def render(phase: dict[str, Any], split: str) -> str:
    """Accuracy (retention) per model and domain, with mean / min retention, as a text table."""
    domains = phase["domains"]
    w = max(16, *(len(d) + 4 for d in domains))
    lines = [f"{split} split — accuracy (retention); rows per domain: {phase['rows_per_domain'][split]}",
             "model".ljust(24) + "".join(d.rjust(w) for d in domains) + "mean ret".rjust(10) + "min ret".rjust(9)]
    for name, row in phase[split].items():
        cells = []
        for d in domains:
            c = row.get(d)
            cells.append("" if c is None else f"{c['accuracy']:.3f}" + (f" ({c['retention']:.2f})"
                                                                          if c["retention"] is not None else ""))
        s = phase["summary"][split].get(name)
        tail = f"{s['mean_retention']:10.3f}{s['min_retention']:9.3f}" if s else ""
        lines.append(name.ljust(24) + "".join(c.rjust(w) for c in cells) + tail)
    return "\n".join(lines)
