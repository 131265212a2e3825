"""What a transformers forward call carries about its KV cache, across transformers' renames.

transformers up to 5.23 passes the cache to a decoder as ``past_key_values``; 5.24 renames the keyword to
``cache`` (the old name stays a deprecated alias until 5.40). Code that hooks a decoder's forward and must
tell prefill from decode (per-request routing) reads the call through :func:`past_length`, which does not
depend on the keyword's name: it looks for a ``Cache`` object under any known name or position, then for
``cache_position``, then compares the attention mask's length with the new tokens'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from moesaic.errors import MoesaicError

__all__ = ["CACHE_KEYWORDS", "CacheCompatError", "check_cache_api", "find_cache", "past_length"]

# every name transformers 5.x used for the cache keyword (newest first)
CACHE_KEYWORDS: tuple[str, ...] = ("cache", "past_key_values", "past_key_value")


class CacheCompatError(MoesaicError):
    """The installed transformers passes the KV cache in a way moesaic cannot read."""


def _cache_class() -> type:
    try:
        from transformers.cache_utils import Cache
    except ImportError as err:  # pragma: no cover - every supported transformers has it
        raise CacheCompatError(
            f"transformers.cache_utils.Cache is missing ({err})",
            "install a supported transformers: pip install -c requirements/lock.txt transformers",
        ) from err
    return Cache


def check_cache_api() -> None:
    """Raise when the installed transformers' cache has no ``get_seq_length`` (what :func:`past_length` uses)."""
    if not callable(getattr(_cache_class(), "get_seq_length", None)):
        raise CacheCompatError(
            "transformers' Cache has no get_seq_length(): per-request routing cannot tell prefill from decode",
            "install a transformers version from the tested range (pyproject.toml; make setup uses the lock file)",
        )


def find_cache(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any | None:
    """The ``Cache`` object of a forward call: under a known keyword first, else any argument of that type."""
    for name in CACHE_KEYWORDS:
        value = kwargs.get(name)
        if value is not None:
            return value
    cache_type = _cache_class()
    for value in (*args, *kwargs.values()):
        if isinstance(value, cache_type):
            return value
    return None


def _new_tokens(args: Sequence[Any], kwargs: Mapping[str, Any]) -> int | None:
    """Length of the call's new tokens: input_ids (batch, seq) or inputs_embeds (batch, seq, H)."""
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None):
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 2:
            return int(shape[1])
    return None


def past_length(args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """Tokens already cached before this forward call (0 = prefill).

    Read from, in order: the cache object (any name), ``cache_position[0]``, and a 2-D attention mask
    longer than the new tokens (mask covers past + new). A call that carries none of them has no past.
    """
    cache = find_cache(args, kwargs)
    if cache is not None:
        get_length = getattr(cache, "get_seq_length", None)
        if not callable(get_length):
            raise CacheCompatError(
                f"the cache object ({type(cache).__name__}) has no get_seq_length()",
                "install a transformers version from the tested range (pyproject.toml / requirements/lock.txt)",
            )
        return int(get_length())
    position = kwargs.get("cache_position")
    if position is not None and getattr(position, "numel", lambda: 0)() > 0:
        return int(position.reshape(-1)[0])
    mask = kwargs.get("attention_mask")
    new = _new_tokens(args, kwargs)
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2 and new is not None:
        return max(0, int(mask.shape[1]) - new)
    return 0
