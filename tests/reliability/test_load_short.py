"""A very short, bounded run of benchmarks/load_test.py: concurrent clients (plain and streamed requests)
against a ``moesaic serve`` subprocess with a tiny VLM for a few seconds: zero errors, real throughput,
the server's memory read from /proc, and a clean exit after SIGTERM. (This caught a stream hang: a
streamer drained twice blocked the model thread forever and every later request timed out.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("moesaic.backends.hf")
if not Path("/proc/self/status").exists():  # pragma: no cover
    pytest.skip("reads the server's memory from /proc", allow_module_level=True)


def load_module():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("moesaic_load_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_short_load_has_zero_errors(tiny_model_dir):
    load_test = load_module()
    report = load_test.run_load(str(tiny_model_dir("idefics3")), clients=6, duration_s=4, max_tokens=6, seed=1)
    assert report.errors == 0, report.error_samples
    assert report.requests >= 12, report  # a hung model thread would leave a handful at most
    assert report.p99_ms < 20_000 and report.p50_ms > 0
    assert 50 < report.rss_start_mib <= report.rss_peak_mib and report.rss_end_mib > 50
    assert report.server_exit_code == 0
    assert load_test.HEADER.splitlines()[0].count("|") == report.row().count("|")  # the printed table lines up


def test_percentiles_and_proc_memory():
    load_test = load_module()
    values = [float(v) for v in range(1, 101)]
    assert (load_test.percentile(values, 0.5), load_test.percentile(values, 0.99)) == (51.0, 99.0)
    assert load_test.percentile([], 0.5) == 0.0
    import os

    rss, peak = load_test.proc_memory_mib(os.getpid())
    assert 10 < rss <= peak


def test_serve_caps_malloc_arenas_unless_the_environment_says(monkeypatch):
    """``moesaic serve`` caps glibc's malloc arenas (RSS under 16 clients: +20 % uncapped, flat capped)."""
    import platform

    from moesaic.serve.app import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins (glibc read it at start-up)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is on_glibc
