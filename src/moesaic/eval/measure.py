"""Resource measurements: peak memory per model (RSS high-water mark, CUDA peak) and latency summaries."""

from __future__ import annotations

import logging
import math
import re
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["reset_peak_memory", "release_memory", "peak_rss_bytes", "cuda_peak_bytes", "percentile"]

log = logging.getLogger(__name__)

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory() -> bool:
    """Reset the RSS high-water mark (Linux ``clear_refs`` 5) and CUDA's peak; False when RSS cannot be reset.

    When it cannot, :func:`peak_rss_bytes` reports the process's peak since start (an upper bound).
    """
    _reset_cuda_peak()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident memory: ``VmHWM`` from /proc (resettable), else ``getrusage`` ``ru_maxrss``."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _PROC_STATUS.read_text())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS reports bytes, Linux KiB


def _cuda() -> object | None:
    torch = sys.modules.get("torch")  # only if some backend already imported it
    if torch is None or not torch.cuda.is_available():  # type: ignore[attr-defined]
        return None
    return torch.cuda  # type: ignore[attr-defined]


def _reset_cuda_peak() -> None:
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()  # type: ignore[attr-defined]


def release_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next model's peak starts low."""
    import gc

    gc.collect()
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()  # type: ignore[attr-defined]


def cuda_peak_bytes() -> int | None:
    """``torch.cuda.max_memory_allocated()`` when torch is loaded and a GPU is present, else None."""
    cuda = _cuda()
    return int(cuda.max_memory_allocated()) if cuda is not None else None  # type: ignore[attr-defined]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); ``q`` in [0, 100]; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
