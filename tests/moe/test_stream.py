"""The streaming merge writes the same model the in-memory build does, tensor by tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moesaic.moe.config import MergeConfig
from moesaic.moe.loading import load_dense
from moesaic.moe.merge import merge
from moesaic.moe.safetensors_writer import PlannedTensor, write_shards


def test_write_shards_splits_indexes_and_produces_each_tensor_once(tmp_path) -> None:
    values = {f"t{i}": torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(5)}
    values["empty"] = torch.zeros(0, 4)
    values["ids"] = torch.arange(6)
    calls: list[str] = []

    def producer(name: str):  # type: ignore[no-untyped-def]
        def make() -> torch.Tensor:
            calls.append(name)
            return values[name]
        return make

    planned = [PlannedTensor(n, tuple(v.shape), torch.bfloat16 if v.is_floating_point() else v.dtype, producer(n))
               for n, v in values.items()]
    names = write_shards(tmp_path, planned, max_shard_bytes=60)  # 24 bytes per bf16 tensor: 2 per shard
    assert sorted(calls) == sorted(values) and len(calls) == len(values)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(names) == 5 and set(index["weight_map"]) == set(values)
    for name, value in values.items():
        got = load_file(str(tmp_path / index["weight_map"][name]))[name]
        want = value.to(torch.bfloat16) if value.is_floating_point() else value
        assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize(("family", "text", "shared", "dtype"), [("idefics2", False, "average", "auto"),
                                                                ("qwen2", True, "base", "bfloat16")])
def test_streamed_merge_equals_the_in_memory_build(family, text, shared, dtype, tmp_path) -> None:
    from moesaic.testing import make_tiny_model, make_tiny_text_model

    base = (make_tiny_text_model if text else make_tiny_model)(family, tmp_path / "base")
    experts = []
    for seed in (1, 2):  # experts whose MLPs and attention differ from the base
        model = load_dense(str(base))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        model.save_pretrained(tmp_path / f"e{seed}")
        experts.append(tmp_path / f"e{seed}")
    specs = [{"source_model": str(e), "positive_prompts": [p]} for e, p in zip(experts, ["a cat", "two cars"])]
    states = []
    for streaming in (True, False):
        out = tmp_path / f"out-{streaming}"
        result = merge(MergeConfig(base_model=str(base), experts=specs, gate_mode="hidden", experts_per_token=1,
                                   shared_weights=shared, dtype=dtype, out=str(out), streaming=streaming))
        assert result.streamed is streaming
        states.append(load_dense(str(out)).state_dict())
    assert states[0].keys() == states[1].keys()
    assert {v.dtype for v in states[0].values()} == {torch.float32 if dtype == "auto" else torch.bfloat16}
    for key, value in states[0].items():
        assert value.dtype == states[1][key].dtype and torch.equal(value, states[1][key]), key
