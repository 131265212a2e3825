"""Merging: identical experts reproduce the base; forced routing reproduces an expert; the gate math
matches softmax → top-k → renormalise; outputs reload natively (or via moesaic.load) with equal logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from moe_helpers import ARCH_OF, FAMILY_OF, token_ids

from moesaic.moe.config import MergeConfig
from moesaic.moe.loading import load_dense
from moesaic.moe.merge import build_moe, merge, validate_merge
from moesaic.moe.routing import load_moe, routers

PROMPTS = [["a photo of a cat on a red mat"], ["how many cars? two cars"], ["the answer is yes. 0 1 2 3"]]
CASES = list(FAMILY_OF)


def _config(base: Path, experts: list[Path], out: Path, **kw: object) -> MergeConfig:
    specs = [{"source_model": str(e), "name": f"e{i}", "positive_prompts": PROMPTS[i]} for i, e in enumerate(experts)]
    return MergeConfig(base_model=str(base), experts=specs, out=str(out), **kw)  # type: ignore[arg-type]


@torch.no_grad()
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # (batch, seq, vocab)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("gate_mode", "k"), [("hidden", 1), ("hidden", 3), ("hidden_avg", 2), ("random", 1),
                                               ("random", 2), ("uniform", 2)])
def test_copies_of_the_base_give_the_base_logits(case, gate_mode, k, tiny_model_dir, tmp_path) -> None:
    base = tiny_model_dir(FAMILY_OF[case])
    result = merge(_config(base, [base] * 3, tmp_path / "moe", gate_mode=gate_mode, experts_per_token=k,
                           output_architecture=ARCH_OF[case]))
    assert result.architecture == ARCH_OF[case] and result.num_experts == 3 and result.experts_per_token == k
    moe, _ = load_moe(tmp_path / "moe")
    ids = token_ids()
    torch.testing.assert_close(_logits(moe, ids), _logits(load_dense(str(base)), ids), atol=1e-5, rtol=1e-4)
    assert (tmp_path / "moe" / "moesaic_config.yaml").is_file()


def _force(model: torch.nn.Module, expert: int) -> list[torch.utils.hooks.RemovableHandle]:
    """Make every router send every token to ``expert`` with weight 1."""

    def hook(_m, _a, out):  # type: ignore[no-untyped-def]
        logits, weights, idx = out
        return logits, torch.ones_like(weights), torch.full_like(idx, expert)

    return [g.register_forward_hook(hook) for g in routers(model)]


@pytest.mark.parametrize("case", ["mixtral", "qwen3_vl_moe", "generic"])
def test_forced_routing_gives_the_experts_logits(case, tiny_model_dir, mlp_expert, tmp_path) -> None:
    base = tiny_model_dir(FAMILY_OF[case])
    experts = [mlp_expert(base, s) for s in (1, 2, 3)]
    merge(_config(base, experts, tmp_path / "moe", gate_mode="uniform", experts_per_token=1,
                  output_architecture=ARCH_OF[case]))
    moe, _ = load_moe(tmp_path / "moe")
    if case != "generic":  # the fastest experts implementation on CPU (benchmarks/moe_decode.py)
        assert moe.config.get_text_config()._experts_implementation == "moesaic_sparse"
    ids = token_ids(1)
    dense = [_logits(load_dense(str(e)), ids) for e in experts]
    assert (dense[0] - dense[1]).abs().max() > 1e-2  # the experts really differ
    for j, want in enumerate(dense):
        handles = _force(moe, j)
        torch.testing.assert_close(_logits(moe, ids), want, atol=1e-5, rtol=1e-4)
        for h in handles:
            h.remove()


@pytest.mark.parametrize("case", ["mixtral", "qwen3_vl_moe", "generic"])
def test_moe_block_is_softmax_topk_renormalised(case, tiny_model_dir, mlp_expert, tmp_path) -> None:
    base = tiny_model_dir(FAMILY_OF[case])
    config = _config(base, [mlp_expert(base, s) for s in (1, 2, 3)], tmp_path / "x", gate_mode="random",
                     experts_per_token=2, output_architecture=ARCH_OF[case])
    model, _, plan = build_moe(config, validate_merge(config))
    from moesaic.moe.layers import find_decoder_layers

    mlp = find_decoder_layers(model).layers[0].mlp
    x = torch.randn(1, 5, plan.gates[0].shape[1]) * 3  # (batch, seq, hidden)
    probs = torch.softmax(x[0] @ plan.gates[0].T, dim=-1)  # (seq, E)
    top_w, top_i = probs.topk(2, dim=-1)
    top_w = top_w / top_w.sum(-1, keepdim=True)
    want = torch.zeros(5, x.shape[-1])
    for t in range(5):
        for w, e in zip(top_w[t], top_i[t], strict=True):
            g, u, d = plan.experts[0][int(e)]
            want[t] += w * ((torch.nn.functional.silu(x[0, t] @ g.T) * (x[0, t] @ u.T)) @ d.T)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x)[0], want, atol=1e-3 * float(want.abs().max()), rtol=1e-4)


def _image_inputs(processor: object) -> dict[str, torch.Tensor]:
    from PIL import Image

    from moesaic.moe.prompts import encode, render_prompt

    img = Image.new("RGB", (32, 32), (200, 30, 40))
    return encode(processor, render_prompt(processor, "what is in the image?", 1), [img])


@pytest.mark.parametrize("case", ["mixtral", "mixtral_llava", "qwen3_vl_moe"])
def test_native_output_reloads_with_plain_transformers(case, tiny_model_dir, mlp_expert, tmp_path) -> None:
    from transformers import AutoModelForImageTextToText

    base = tiny_model_dir(FAMILY_OF[case])
    config = _config(base, [mlp_expert(base, s) for s in (1, 2)], tmp_path / "moe", gate_mode="hidden",
                     experts_per_token=1, output_architecture=ARCH_OF[case])
    in_memory, processor, _ = build_moe(config, validate_merge(config))
    merge(config)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "moe").eval()
    assert type(reloaded).__name__ == type(in_memory).__name__
    inputs = _image_inputs(processor)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, in_memory(**inputs).logits, atol=1e-6, rtol=1e-5)
        a = reloaded.generate(**inputs, max_new_tokens=5, do_sample=False)
        b = in_memory.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert a.shape[1] == inputs["input_ids"].shape[1] + 5 and torch.equal(a, b)


def test_generic_output_reloads_with_moesaic_load(tiny_model_dir, mlp_expert, tmp_path) -> None:
    import moesaic
    from moesaic.inputs.messages import Turn
    from moesaic.moe.generic import WEIGHTS_NAME, GenericMoEBackend

    base = tiny_model_dir("qwen3_vl")
    config = _config(base, [mlp_expert(base, s) for s in (1, 2)], tmp_path / "moe", gate_mode="hidden_avg",
                     experts_per_token=1, output_architecture="generic")
    in_memory, processor, _ = build_moe(config, validate_merge(config))
    merge(config)
    assert (tmp_path / "moe" / WEIGHTS_NAME).is_file() and not (tmp_path / "moe" / "model.safetensors").exists()
    backend = moesaic.load(str(tmp_path / "moe"))
    assert isinstance(backend, GenericMoEBackend) and backend.experts == ["e0", "e1"]
    inputs = _image_inputs(processor)
    with torch.no_grad():
        torch.testing.assert_close(backend.model(**inputs).logits, in_memory(**inputs).logits, atol=1e-6, rtol=1e-5)
    from PIL import Image

    answer = backend.generate([Turn("user", (Image.new("RGB", (32, 32), "blue"), "what color?"))])
    assert answer.completion_tokens >= 1


def test_shared_weights_average_and_dtype(tiny_model_dir, tmp_path) -> None:
    from moesaic.moe.layers import find_decoder_layers

    base = tiny_model_dir("idefics3")
    experts = []
    for seed in (5, 6):  # experts whose attention differs from the base
        model = load_dense(str(base))
        with torch.no_grad():
            find_decoder_layers(model).layers[0].self_attn.q_proj.weight.add_(float(seed))
        model.save_pretrained(tmp_path / f"att{seed}")
        from moesaic.testing import copy_processor

        copy_processor(base, tmp_path / f"att{seed}")
        experts.append(tmp_path / f"att{seed}")
    for arch in ("mixtral", "generic"):
        merge(_config(base, experts, tmp_path / arch, gate_mode="uniform", experts_per_token=1,
                      shared_weights="average", dtype="bfloat16", output_architecture=arch))
        moe, _ = load_moe(tmp_path / arch)
        q = find_decoder_layers(moe).layers[0].self_attn.q_proj.weight
        want = find_decoder_layers(load_dense(str(base))).layers[0].self_attn.q_proj.weight + 5.5
        assert q.dtype == torch.bfloat16
        torch.testing.assert_close(q.float(), want.to(torch.bfloat16).float(), atol=0.05, rtol=0.01)


@pytest.mark.parametrize(("text_cls", "want_arch", "want_cls"), [
    ("LlamaConfig", "mixtral", "MixtralForCausalLM"), ("Qwen3Config", "generic", "Qwen3ForCausalLM")])
def test_text_only_decoders(text_cls, want_arch, want_cls, tmp_path) -> None:
    import transformers

    from moesaic.testing import tiny_processor

    tok = tiny_processor("llava").tokenizer
    cfg = getattr(transformers, text_cls)(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          head_dim=8, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    base = tmp_path / "base"
    result = merge(_config(base, [base, base], tmp_path / "moe", gate_mode="hidden", experts_per_token=2))
    assert result.architecture == want_arch
    moe, processor = load_moe(tmp_path / "moe")
    assert type(moe).__name__ == want_cls and processor is not None
    ids = token_ids()
    torch.testing.assert_close(_logits(moe, ids), _logits(load_dense(str(base)), ids), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["mixtral", "qwen3_vl_moe", "generic"])
def test_few_token_decode_path_matches_the_experts_loop(case, tiny_model_dir, mlp_expert, tmp_path,
                                                        monkeypatch) -> None:
    import moesaic.moe.fast_experts as fast
    import moesaic.moe.sparse as sparse

    base = tiny_model_dir(FAMILY_OF[case])
    out = tmp_path / "moe"
    merge(_config(base, [mlp_expert(base, s) for s in (1, 2, 3)], out, gate_mode="random", experts_per_token=2,
                  output_architecture=ARCH_OF[case]))
    model, _ = load_moe(out)
    if case != "generic":
        assert model.config.get_text_config()._experts_implementation == "moesaic_sparse"
    ids = token_ids(3, length=6)  # (1, 6): every layer call is a few-token call
    with torch.no_grad():
        fast_logits = model(input_ids=ids).logits
        fast_tokens = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
        monkeypatch.setattr(fast, "FEW_TOKENS", 0)  # native: eager fallback for every call
        monkeypatch.setattr(sparse, "FEW_TOKENS", 0)  # generic: the per-expert loop
        loop_logits = model(input_ids=ids).logits
        loop_tokens = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    torch.testing.assert_close(fast_logits, loop_logits, atol=1e-5, rtol=1e-5)
    assert fast_tokens.tolist() == loop_tokens.tolist()
