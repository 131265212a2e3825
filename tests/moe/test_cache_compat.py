"""Reading a forward call's KV-cache state whatever transformers names the keyword (5.24: ``cache``)."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from moesaic.backends.cache_compat import CacheCompatError, find_cache, past_length


def _cache_with(tokens: int) -> DynamicCache:
    cache = DynamicCache()
    k = torch.zeros(1, 2, tokens, 4)  # (batch, heads, seq, head_dim)
    cache.update(k, k.clone(), layer_idx=0)
    return cache


@pytest.mark.parametrize("name", ["cache", "past_key_values", "past_key_value"])
def test_the_cache_is_read_under_every_name(name: str) -> None:
    ids = torch.ones(1, 1, dtype=torch.long)
    assert past_length((), {"input_ids": ids, name: _cache_with(6)}) == 6
    assert past_length((), {"input_ids": ids, name: _cache_with(0)}) == 0


def test_a_cache_under_an_unknown_name_or_position_is_found_by_type() -> None:
    cache = _cache_with(3)
    assert find_cache((), {"kv_store": cache}) is cache
    assert past_length((torch.ones(1, 1, dtype=torch.long), None, None, cache), {}) == 3


def test_without_a_cache_position_or_mask_length_tell_the_past() -> None:
    new = torch.ones(2, 1, dtype=torch.long)  # (batch, 1): one decode step
    assert past_length((), {"input_ids": new, "cache_position": torch.tensor([9])}) == 9
    assert past_length((), {"input_ids": new, "attention_mask": torch.ones(2, 10)}) == 9
    embeds = torch.zeros(2, 4, 8)  # (batch, seq, H): a prefill of 4 tokens
    assert past_length((), {"inputs_embeds": embeds, "attention_mask": torch.ones(2, 4)}) == 0
    assert past_length((), {"input_ids": new}) == 0  # nothing says there is a past: a plain forward


def test_a_cache_without_its_length_is_refused_with_the_fix() -> None:
    class Odd:
        pass

    with pytest.raises(CacheCompatError, match="get_seq_length") as err:
        past_length((), {"cache": Odd()})
    assert "transformers" in str(err.value.hint)
