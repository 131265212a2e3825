"""The server's memory budget: decoded pixels in flight across all requests, and a resident-memory ceiling.

Each limit alone was not enough: every image within ``--max-image-pixels`` and every body within
``--max-body-bytes``, twelve requests of four 4096² PNGs still took the server from 0.9 to 5.3 GB. So:

- :class:`PixelBudget` counts the pixels of every image from the moment its header is read until its request
  is answered (decoding, queued, in the model). A decode that does not fit waits up to ``wait_s`` for others
  to finish, then the request gets 503 with ``Retry-After``.
- :meth:`MemoryBudget.admit` refuses new work with 503 while the process's resident memory is above the
  ceiling (default: a share of the machine's memory, or of its cgroup limit when that is lower).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from pathlib import Path

from moesaic.errors import OverloadedError

__all__ = ["PixelBudget", "PixelLease", "MemoryBudget", "machine_memory_bytes", "rss_bytes", "RSS_SHARE",
           "PIXEL_BYTES"]

log = logging.getLogger(__name__)

RSS_SHARE = 0.75  # default resident-memory ceiling: this share of the machine's (or cgroup's) memory
# bytes per held pixel the default budget assumes: decoded image, RGB copy, processor arrays (BENCHMARKS.md)
PIXEL_BYTES = 16
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def machine_memory_bytes() -> int | None:
    """Physical memory, or the cgroup (v2 or v1) memory limit when that is lower; ``None`` when unknown."""
    sizes: list[int] = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * _PAGE)
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:
            sizes.append(int(text))
    return min(sizes) if sizes else None


def rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc/self/statm``); ``None`` elsewhere."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``), so RSS reflects what is in use."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class PixelBudget:
    """At most ``capacity`` decoded pixels held at once, across threads."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.used = 0
        self.peak = 0
        self.refused = 0
        self._cond = threading.Condition()

    def reserve(self, pixels: int) -> None:
        if pixels > self.capacity:  # one image larger than the whole budget can never fit
            raise OverloadedError(
                f"an image of {pixels} pixels is larger than the server's budget of {self.capacity} decoded pixels",
                "send a smaller image, or raise --max-pixels-in-flight")
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.used + pixels > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    raise OverloadedError(
                        f"the server holds {self.used} decoded pixels of its budget of {self.capacity}; "
                        f"this image needs {pixels} more",
                        "retry after a moment (Retry-After), send smaller images, or raise --max-pixels-in-flight")
                self._cond.wait(left)
            self.used += pixels
            self.peak = max(self.peak, self.used)

    def release(self, pixels: int) -> None:
        with self._cond:
            self.used = max(0, self.used - pixels)
            self._cond.notify_all()


class PixelLease:
    """One request's share of a :class:`PixelBudget`; :meth:`close` returns all of it (idempotent)."""

    def __init__(self, budget: PixelBudget) -> None:
        self._budget = budget
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def reserve(self, pixels: int) -> None:
        self._budget.reserve(pixels)
        with self._lock:
            self._held += pixels

    def release(self, pixels: int) -> None:
        with self._lock:
            pixels = min(pixels, self._held)
            self._held -= pixels
        self._budget.release(pixels)

    def close(self) -> None:
        self.release(self._held)

    def __del__(self) -> None:  # a stream abandoned before it ran still returns its pixels
        if self._held:
            self.close()


class MemoryBudget:
    """The pixel budget and the RSS ceiling of one server."""

    def __init__(self, max_rss_bytes: int | None, max_pixels: int, wait_s: float = 5.0) -> None:
        self.max_rss_bytes = max_rss_bytes
        self.pixels = PixelBudget(max_pixels, wait_s)
        self.rss_refusals = 0

    @classmethod
    def for_machine(cls, max_rss_mib: int | None, max_pixels: int | None, min_pixels: int,
                    wait_s: float = 5.0) -> "MemoryBudget":
        """Defaults from the machine: RSS ceiling = RSS_SHARE of its memory; pixel budget = a quarter of that
        ceiling at PIXEL_BYTES per pixel, never below one image of ``min_pixels``."""
        memory = machine_memory_bytes()
        ceiling = max_rss_mib * 1024 * 1024 if max_rss_mib else (int(memory * RSS_SHARE) if memory else None)
        if max_pixels is None:
            max_pixels = max(min_pixels, (ceiling or 16 * 1024**3) // 4 // PIXEL_BYTES)
        return cls(ceiling, max_pixels, wait_s)

    def lease(self) -> PixelLease:
        return PixelLease(self.pixels)

    def snapshot(self) -> dict[str, int | None]:
        """What ``/health`` reports: resident memory and its ceiling (MiB), pixels held and their budget."""
        rss = rss_bytes()
        return {"rss_mib": None if rss is None else rss >> 20,
                "max_rss_mib": None if self.max_rss_bytes is None else self.max_rss_bytes >> 20,
                "pixels_in_flight": self.pixels.used, "max_pixels_in_flight": self.pixels.capacity,
                "pixels_refused": self.pixels.refused, "rss_refused": self.rss_refusals}

    def admit(self) -> None:
        """Raise 503 while resident memory is over the ceiling (after returning freed heap to the system)."""
        if self.max_rss_bytes is None:
            return
        rss = rss_bytes()
        if rss is None or rss <= self.max_rss_bytes:
            return
        _trim()
        rss = rss_bytes() or 0
        if rss > self.max_rss_bytes:
            self.rss_refusals += 1
            log.warning("refusing work: resident memory %d MiB is over the ceiling of %d MiB",
                        rss >> 20, self.max_rss_bytes >> 20)
            raise OverloadedError(
                f"the server is using {rss >> 20} MiB of memory, over its ceiling of {self.max_rss_bytes >> 20} MiB",
                "retry after a moment (Retry-After), or raise --max-rss-mib")
