"""The Pareto plot: accuracy against p50 latency, bubble area ∝ peak memory, the front drawn as a line.

Each model's bubble is its accuracy (the mean over datasets of their primary metric) at its p50 latency; a
small marker per model and dataset (one shape per dataset, at that dataset's p50 latency, joined to the
model's bubble by a faint line) shows the breakdown. The y axis names the metric(s); the latency axis is
logarithmic when latencies differ by more than 20×.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from moesaic.atomic import atomic_write_bytes
from moesaic.errors import missing_extra
from moesaic.eval.tables import accuracy_label
from moesaic.eval.results import EvalResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_pareto", "pareto_figure", "PLOT_NAME"]

PLOT_NAME = "pareto.png"
_MIN_AREA, _MAX_AREA = 60.0, 1500.0
_DATASET_MARKERS = ("v", "^", "s", "P", "X", "<", ">", "p", "*", "h")


def _areas(memories: list[float | None]) -> list[float]:
    """Bubble areas scaled linearly between the smallest and the largest known memory."""
    known = [m for m in memories if m is not None]
    top = max(known, default=0.0)
    return [_MIN_AREA if (m is None or top <= 0) else _MIN_AREA + (_MAX_AREA - _MIN_AREA) * m / top
            for m in memories]


def _dataset_markers(ax: object, result: EvalResult, xs: list[float], ys: list[float]) -> list[float]:
    """One small marker per model and dataset, labelled ``dataset (metric)``; returns their latencies (ms)."""
    names = list(dict.fromkeys(d.dataset for m in result.models for d in m.datasets))
    if len(names) < 2:
        return []  # the bubble already is the one dataset's score
    seen: list[float] = []
    for i, name in enumerate(names):
        points = [(d.latency_p50_s * 1000.0 if d.latency_p50_s is not None else x, d.primary, d.primary_metric, x, y)
                  for m, x, y in zip(result.models, xs, ys, strict=True) for d in m.datasets if d.dataset == name]
        for px, py, _, x, y in points:
            ax.plot([x, px], [y, py], color="lightgray", linewidth=0.7, zorder=1)  # type: ignore[attr-defined]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=30,  # type: ignore[attr-defined]
                   marker=_DATASET_MARKERS[i % len(_DATASET_MARKERS)], color="dimgray", alpha=0.9, zorder=3,
                   label=f"{name} ({points[0][2]})")
        seen += [p[0] for p in points]
    return seen


def plot_pareto(result: EvalResult, path: Path) -> Path:
    """Draw and atomically write the PNG; returns its path."""
    buf = io.BytesIO()
    pareto_figure(result).savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def pareto_figure(result: EvalResult) -> "Figure":
    """The plot as a matplotlib ``Figure`` (not drawn to a file)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("matplotlib", "eval") from None
    models = result.models
    fig = Figure(figsize=(7, 5), dpi=100)
    ax = fig.add_subplot()
    xs = [m.latency_p50_s * 1000.0 for m in models]  # ms
    ys = [m.accuracy for m in models]
    on_front = [m.name in result.pareto for m in models]
    ax.scatter(xs, ys, s=_areas([m.memory_mb for m in models]), alpha=0.45,
               c=["tab:orange" if f else "tab:blue" for f in on_front], edgecolors="black", linewidths=0.8)
    for i, (m, x, y) in enumerate(zip(models, xs, ys, strict=True)):
        mem = f" ({m.memory_mb:.0f} MB)" if m.memory_mb is not None else ""
        # alternate above / below so neighbours' labels do not overlap
        ax.annotate(m.name + mem, (x, y), textcoords="offset points", xytext=(6, 8 if i % 2 == 0 else -14),
                    fontsize=8)
    spread = [x for x in xs + _dataset_markers(ax, result, xs, ys) if x > 0]
    if spread and max(spread) > 20 * min(spread):
        ax.set_xscale("log")
    front = sorted((x, y) for x, y, f in zip(xs, ys, on_front, strict=True) if f)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:orange",
                linestyle="--", linewidth=1.2, marker="D", markersize=4, label="Pareto front")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("latency p50 per sample (ms)")
    ax.set_ylabel(accuracy_label(result), fontsize=8 if len(accuracy_label(result)) > 40 else 10)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("moesaic eval: accuracy vs latency (bubble area ∝ peak memory)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25)
    fig.tight_layout()
    return fig
