"""The worst case at once (benchmarks/memory_budget.py, shortened): concurrent requests of four large images
each against a ``moesaic serve`` subprocess with a tiny VLM, under an 8 GiB address-space cap. With a pixel
budget of four such images and an RSS ceiling, every answer is a 200 or a 503 (never a 500 or a dead server),
resident memory peaks under the ceiling, and a good request is answered afterwards."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("moesaic.backends.hf")
if not Path("/proc/self/status").exists():  # pragma: no cover
    pytest.skip("reads the server's memory from /proc", allow_module_level=True)


def load_module():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_budget.py"
    spec = importlib.util.spec_from_file_location("moesaic_memory_budget", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_worst_case_concurrently_stays_under_the_budget(tiny_model_dir):
    bench = load_module()
    side, ceiling = 2048, 2500
    report = bench.run_budget(str(tiny_model_dir("idefics3")), requests=8, side=side, rounds=1,
                              serve_args=["--max-rss-mib", str(ceiling), "--max-pixels-in-flight",
                                          str(4 * side * side), "--budget-wait-s", "2"])
    assert report.alive and report.good_after, report
    assert set(report.statuses) <= {200, 503} and report.statuses[200] >= 1, report.statuses
    assert report.rss_peak_mib < ceiling, report
    assert report.limits["max_rss_mib"] == ceiling and report.limits["pixels_in_flight"] == 0
    assert bench.HEADER.splitlines()[0].count("|") == report.row().count("|")
