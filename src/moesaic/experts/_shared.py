"""Load-once helpers shared by the experts: a thread-safe cache of instances keyed by arguments."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["shared_instance", "clear_shared"]

T = TypeVar("T")

_LOCK = threading.Lock()
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}
_INSTANCES: dict[Hashable, object] = {}


def shared_instance(key: Hashable, factory: Callable[[], T]) -> T:
    """Return the instance cached under ``key``, building it with ``factory`` exactly once.

    Two threads asking for the same key wait for one build; different keys build in parallel.
    A factory that raises leaves nothing cached, so a later call retries.
    """
    found = _INSTANCES.get(key)
    if found is not None:
        return found  # type: ignore[return-value]
    with _LOCK:
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        found = _INSTANCES.get(key)
        if found is None:
            found = factory()
            _INSTANCES[key] = found
    return found  # type: ignore[return-value]


def clear_shared() -> None:
    """Forget every cached instance (tests; freeing memory)."""
    with _LOCK:
        _INSTANCES.clear()
