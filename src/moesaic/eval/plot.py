"""The Pareto plot: accuracy against p50 latency, bubble area ∝ peak memory, the front drawn as a line."""

from __future__ import annotations

import io
from pathlib import Path

from moesaic.atomic import atomic_write_bytes
from moesaic.errors import missing_extra
from moesaic.eval.results import EvalResult

__all__ = ["plot_pareto", "PLOT_NAME"]

PLOT_NAME = "pareto.png"
_MIN_AREA, _MAX_AREA = 60.0, 1500.0


def _areas(memories: list[float | None]) -> list[float]:
    """Bubble areas scaled linearly between the smallest and the largest known memory."""
    known = [m for m in memories if m is not None]
    top = max(known, default=0.0)
    return [_MIN_AREA if (m is None or top <= 0) else _MIN_AREA + (_MAX_AREA - _MIN_AREA) * m / top
            for m in memories]


def plot_pareto(result: EvalResult, path: Path) -> Path:
    """Draw and atomically write the PNG; returns its path."""
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
    front = sorted((x, y) for x, y, f in zip(xs, ys, on_front, strict=True) if f)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:orange",
                linestyle="--", linewidth=1.2, marker="D", markersize=4, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("latency p50 per sample (ms)")
    ax.set_ylabel("accuracy (mean primary metric)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("moesaic eval: accuracy vs latency (bubble area ∝ peak memory)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
