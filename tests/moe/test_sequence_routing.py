"""Sequence routing: one expert choice per sequence (pooled over the prompt's real tokens), reused at decode;
``sequence_first``: the first layer's choice in every layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from moe_helpers import ARCH_OF, FAMILY_OF

from moesaic.errors import ConfigError
from moesaic.moe.config import MergeConfig
from moesaic.moe.loading import load_dense
from moesaic.moe.merge import merge
from moesaic.moe.routing import load_moe, record_routing, routers
from moesaic.moe.sequence_routing import get_routing, routing_mode, set_routing

CASES = ["mixtral", "qwen3_vl_moe", "generic"]
MODES = ["sequence", "sequence_first"]
PAD = 0


def _merged(case: str, tiny_model_dir, mlp_expert, out: Path, k: int = 1) -> tuple[Path, list[Path]]:  # type: ignore[no-untyped-def]
    base = tiny_model_dir(FAMILY_OF[case])
    experts = [mlp_expert(base, s) for s in (1, 2, 3)]
    specs = [{"source_model": str(e), "name": f"e{i}", "positive_prompts": [f"prompt {i}"]}
             for i, e in enumerate(experts)]
    merge(MergeConfig(base_model=str(base), experts=specs, out=str(out), gate_mode="random",  # type: ignore[arg-type]
                      experts_per_token=k, output_architecture=ARCH_OF[case], seed=0))
    return out, experts


def _left_padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (batch, max_len) ids and their attention mask (1 = real token)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(10, 200, (len(lengths), width), generator=gen)  # padding holds random ids too:
    mask = torch.zeros((len(lengths), width), dtype=torch.long)  # only the mask says what to ignore
    for row, n in enumerate(lengths):
        mask[row, width - n:] = 1
    return ids, mask


def _generate(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, new: int = 5) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,  # type: ignore[operator]
                              pad_token_id=PAD, eos_token_id=None)  # (batch, len + new)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_every_token_of_a_sequence_uses_the_same_experts(case, mode, tiny_model_dir, mlp_expert, tmp_path) -> None:
    folder, _ = _merged(case, tiny_model_dir, mlp_expert, tmp_path / "moe", k=2)
    model, _ = load_moe(folder)
    ids, mask = _left_padded([12, 7, 10])
    with record_routing(model) as per_token:
        _generate(model, ids, mask)
    varied = any(len({tuple(r) for r in idx.tolist()}) > 1 for layer in per_token for _, idx in layer)
    assert varied  # per-token routing mixes experts inside a sequence, so the check below can fail

    set_routing(model, mode)
    with record_routing(model) as calls:  # registered after the sequence hook: sees its output
        _generate(model, ids, mask)
    for layer in calls:
        prefill = layer[0][1].reshape(3, ids.shape[1], 2)  # (batch, seq, k)
        assert len(layer) == 5  # prefill + 4 decode steps
        for row in range(3):
            assert (prefill[row] == prefill[row, -1]).all()  # padding positions too: one choice per sequence
        for _, idx in layer[1:]:  # decode steps: (batch, k), the stored choice
            torch.testing.assert_close(idx, prefill[:, -1])
    per_layer = [layer[0][1].reshape(3, ids.shape[1], 2)[:, -1].tolist() for layer in calls]  # (L, batch, k)
    if mode == "sequence_first":  # one choice for the whole network
        assert all(choice == per_layer[0] for choice in per_layer)
    else:  # these random gates choose differently in some layer
        assert any(choice != per_layer[0] for choice in per_layer)


def _pin_pooled_choice(model: torch.nn.Module, expert: int) -> None:
    """Router logits whose per-token top-1 alternates (j, j+1) but whose prompt mean clearly picks ``expert``."""

    def hook(_m, _a, out):  # type: ignore[no-untyped-def]
        logits, weights, _ = out  # (T, E)
        fake = torch.zeros_like(logits)
        fake[0::2, expert] = 10.0  # even tokens: expert j by far
        fake[1::2, (expert + 1) % logits.shape[1]] = 1.0  # odd tokens: the next expert, narrowly
        top_w, top_i = torch.topk(torch.softmax(fake.float(), dim=-1), weights.shape[1], dim=-1)
        return fake, (top_w / top_w.sum(-1, keepdim=True)).to(weights.dtype), top_i

    for gate in routers(model):
        gate.register_forward_hook(hook)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("expert", "mode"), [(0, "sequence"), (2, "sequence"), (1, "sequence_first")])
def test_a_pooled_choice_gives_that_experts_logits(case, expert, mode, tiny_model_dir, mlp_expert, tmp_path) -> None:
    folder, experts = _merged(case, tiny_model_dir, mlp_expert, tmp_path / "moe")
    model, _ = load_moe(folder)
    _pin_pooled_choice(model, expert)  # before set_routing, so the sequence hook pools these logits
    ids, _ = _left_padded([14])
    with torch.no_grad():
        dense = load_dense(str(experts[expert]))(input_ids=ids).logits  # (1, seq, vocab)
        per_token = model(input_ids=ids).logits
        with routing_mode(model, mode):
            pooled = model(input_ids=ids).logits
    assert (per_token - dense).abs().max() > 1e-3  # per-token routing mixes in expert j+1
    torch.testing.assert_close(pooled, dense, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_left_padded_batch_generates_as_one_at_a_time(case, mode, tiny_model_dir, mlp_expert, tmp_path) -> None:
    folder, _ = _merged(case, tiny_model_dir, mlp_expert, tmp_path / "moe")
    model, _ = load_moe(folder, routing=mode)
    assert get_routing(model) == mode
    lengths = [16, 2, 9, 3]  # short rows are mostly padding: pooling over it would change their choice
    ids, mask = _left_padded(lengths, seed=4)
    batched = _generate(model, ids, mask, new=6)[:, ids.shape[1]:]  # (batch, new)
    singles = [_generate(model, ids[r:r + 1, -n:], mask[r:r + 1, -n:], new=6)[0, n:] for r, n in enumerate(lengths)]
    assert batched.tolist() == [s.tolist() for s in singles]
    # each row's pooled choice (every layer) equals its choice alone, and the rows really are routed apart
    with record_routing(model) as calls:
        _generate(model, ids, mask, new=1)
    together = torch.stack([layer[0][1].reshape(4, ids.shape[1], 1)[:, -1, 0] for layer in calls])  # (L, batch)
    alone = []
    for r, n in enumerate(lengths):
        with record_routing(model) as one:
            _generate(model, ids[r:r + 1, -n:], mask[r:r + 1, -n:], new=1)
        alone.append(torch.stack([layer[0][1][-1, 0] for layer in one]))  # (L,)
    assert together.tolist() == torch.stack(alone, dim=1).tolist()
    assert any(len(set(row)) > 1 for row in together.tolist())
    with record_routing(model) as unmasked, torch.no_grad():
        model(input_ids=ids)  # no mask: the padding is pooled too, which changes some choice
    assert together.tolist() != [layer[0][1].reshape(4, ids.shape[1], 1)[:, -1, 0].tolist() for layer in unmasked]


@pytest.mark.parametrize("case", CASES)
def test_token_mode_is_unchanged(case, tiny_model_dir, mlp_expert, tmp_path) -> None:
    folder, _ = _merged(case, tiny_model_dir, mlp_expert, tmp_path / "moe")
    model, _ = load_moe(folder)
    ids, mask = _left_padded([9, 13], seed=5)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        with routing_mode(model, "sequence"):
            sequence = model(input_ids=ids, attention_mask=mask).logits
        after = model(input_ids=ids, attention_mask=mask).logits
        explicit = load_moe(folder, routing="token")[0](input_ids=ids, attention_mask=mask).logits
    assert get_routing(model) == "token"
    assert (sequence - before).abs().max() > 1e-3  # the mode matters for these random gates
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    torch.testing.assert_close(explicit, before, atol=0, rtol=0)
    assert all(not g._forward_hooks for g in routers(model))  # nothing left installed


def test_unknown_mode_is_rejected(tiny_model_dir, mlp_expert, tmp_path) -> None:
    folder, _ = _merged("generic", tiny_model_dir, mlp_expert, tmp_path / "moe")
    model, _ = load_moe(folder)
    with pytest.raises(ConfigError, match="routing mode"):
        set_routing(model, "prompt")


@pytest.mark.parametrize("case", ["mixtral", "qwen3_vl_moe"])
def test_sequence_first_generates_the_chosen_experts_tokens(case, tiny_model_dir, mlp_expert, tmp_path) -> None:
    """Greedy tokens under ``sequence_first`` are those of the chosen expert alone, and not per-token routing's.

    Fails when the mode has no effect on generation, also when only decode steps lose it (transformers 5.24
    renamed the cache keyword, and decode steps were re-routed per token without any error)."""
    folder, experts = _merged(case, tiny_model_dir, mlp_expert, tmp_path / "moe")
    model, _ = load_moe(folder, routing="sequence_first")
    ids, mask = _left_padded([11], seed=7)
    with record_routing(model) as calls:
        routed = _generate(model, ids, mask, new=8)  # (1, 11 + 8)
    chosen = int(calls[0][0][1][-1, 0])  # layer 0's prefill choice
    alone = _generate(load_dense(str(experts[chosen])), ids, mask, new=8)
    set_routing(model, "token")
    per_token = _generate(model, ids, mask, new=8)
    with record_routing(model) as token_calls, torch.no_grad():
        model(input_ids=routed, attention_mask=torch.ones_like(routed))
    generated_choices = token_calls[0][0][1][ids.shape[1]:, 0].tolist()  # layer 0, per generated position
    assert any(c != chosen for c in generated_choices)  # per-token routing of the decode steps would differ
    assert routed.tolist() == alone.tolist()
    assert per_token.tolist() != routed.tolist()
