"""Measurements: percentiles agree with numpy; the RSS high-water mark sees an allocation and resets."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from moesaic.eval import measure
from moesaic.eval.results import ModelResult, pareto_front


@pytest.mark.parametrize("values", [[0.3], [1.0, 2.0], [5.0, 1.0, 3.0, 2.0, 4.0], list(np.linspace(0, 1, 17))])
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert measure.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_empty_is_nan() -> None:
    assert math.isnan(measure.percentile([], 50))


def test_peak_rss_sees_allocation_and_resets() -> None:
    measure.reset_peak_memory()
    base = measure.peak_rss_bytes()
    block = bytearray(80 * 1024 * 1024)  # 80 MiB, touched
    for i in range(0, len(block), 4096):
        block[i] = 1
    peak = measure.peak_rss_bytes()
    assert peak - base > 70 * 1024 * 1024
    del block
    if not measure.reset_peak_memory():
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    assert measure.peak_rss_bytes() < peak - 60 * 1024 * 1024


def test_cuda_peak_read_from_loaded_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    cuda = types.SimpleNamespace(is_available=lambda: True, max_memory_allocated=lambda: 123456789,
                                 reset_peak_memory_stats=lambda: calls.append("reset"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    measure.reset_peak_memory()
    assert calls == ["reset"] and measure.cuda_peak_bytes() == 123456789
    no_gpu = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=no_gpu))
    assert measure.cuda_peak_bytes() is None


def _m(name: str, acc: float, p50: float) -> ModelResult:
    return ModelResult(name=name, kind="local", samples=1, cache_hits=0, model_calls=1, accuracy=acc,
                       latency_mean_s=p50, latency_p50_s=p50, latency_p95_s=p50, tokens_per_s=None,
                       peak_rss_mb=None, datasets=[])


def test_pareto_front() -> None:
    models = [_m("fast-weak", 0.3, 0.1), _m("slow-strong", 0.9, 1.0), _m("dominated", 0.5, 2.0),
              _m("middle", 0.6, 0.5), _m("tie-worse", 0.6, 0.6)]
    assert pareto_front(models) == ["fast-weak", "middle", "slow-strong"]
    assert pareto_front([_m("a", 0.5, 1.0), _m("b", 0.5, 1.0)]) == ["a", "b"]  # equal: neither dominates
