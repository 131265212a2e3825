"""Decode speed of a merged sparse MoE vs the dense base vs a Cephalo-style run-every-expert MoE.

SmolLM2-135M-shaped text model with random weights (hidden 576, 30 layers, intermediate 1536, 9 heads /
3 kv heads, vocab 49152), N=4 experts (the base's MLPs plus noise), k=1 and k=2. The sparse MoE is built
by moesaic's own ``mixtral`` output architecture (Llama → ``MixtralForCausalLM``) and timed with each
experts implementation transformers offers (``eager``, ``batched_mm``, ``grouped_mm``) and with moesaic's
few-token decode path (``moesaic_sparse``, :mod:`moesaic.moe.fast_experts`); the Cephalo-style
block runs all N expert MLPs on every token and then keeps the top-k (compute ∝ N).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/moe_decode.py --threads 1

Prints one table (tokens/s of greedy decoding, batch 1, fixed seed; best of --repeats round-robin runs)
and the ratios to the dense base.

Measured 2026-11-23 12:00 UTC on the shared 2-core CPU dev box (load average ~3), 1 thread, 16 new tokens
(two runs; full table in BENCHMARKS.md): MoE k=1 with ``moesaic_sparse`` 0.87x / 1.03x the dense base and
2.32x / 2.50x the Cephalo-style block; k=2 0.60x / 0.65x dense. batched_mm is 5-10x slower on CPU; eager and
grouped_mm sit within the noise of moesaic_sparse. moesaic loads MoEs with ``moesaic_sparse`` on CPU
(``moesaic.moe.routing.CPU_EXPERTS_IMPLEMENTATION``).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from moesaic.moe.arch import MoEPlan
from moesaic.moe.fast_experts import register
from moesaic.moe.layers import dense_mlp_weights, find_decoder_layers
from moesaic.moe.mixtral import MixtralOutput

SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)


class CephaloMoE(nn.Module):
    """Cephalo's block: every expert on every token, then softmax → top-k → softmax of the top-k values."""

    def __init__(self, mlps: list[nn.Module], gate: torch.Tensor, k: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(mlps)
        self.gate = nn.Linear(gate.shape[1], gate.shape[0], bias=False)
        self.gate.weight.data.copy_(gate)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, hidden)
        probs = F.softmax(self.gate(x), dim=-1)  # (batch, seq, E)
        top_w, top_i = probs.topk(self.k, dim=-1)
        top_w = F.softmax(top_w, dim=-1)
        outs = torch.stack([e(x) for e in self.experts], dim=-2)  # (batch, seq, E, hidden)
        picked = outs.gather(-2, top_i[..., None].expand(*top_i.shape, x.shape[-1]))  # (batch, seq, k, hidden)
        return (picked * top_w[..., None]).sum(-2)


def build(num_experts: int, seed: int) -> tuple[nn.Module, nn.Module, nn.Module, MoEPlan]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    gen = torch.Generator().manual_seed(seed)
    layers = find_decoder_layers(base)
    experts = [[tuple(w + 0.01 * torch.randn(w.shape, generator=gen) for w in dense_mlp_weights(m))
                for _ in range(num_experts)] for m in layers.mlps()]
    gates = [torch.randn(num_experts, SHAPE["hidden_size"], generator=gen) for _ in layers.layers]
    plan = MoEPlan(num_experts=num_experts, top_k=1, gates=gates, experts=experts)  # type: ignore[arg-type]
    moe = MixtralOutput().build(base, plan)
    cephalo = copy.deepcopy(base)
    for i, layer in enumerate(find_decoder_layers(cephalo).layers):
        mlps = []
        for g, u, d in experts[i]:
            mlp = copy.deepcopy(layer.mlp)
            mlp.gate_proj.weight.data, mlp.up_proj.weight.data, mlp.down_proj.weight.data = g, u, d
            mlps.append(mlp)
        layer.mlp = CephaloMoE(mlps, gates[i], 1)
    return base, moe, cephalo.eval(), plan


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return elapsed


def set_k(model: nn.Module, k: int) -> None:
    for layer in find_decoder_layers(model).layers:
        if hasattr(layer.mlp, "k"):
            layer.mlp.k = k
        else:
            layer.mlp.gate.top_k = k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impls", default="moesaic_sparse,eager,batched_mm,grouped_mm",
                    help="comma-separated experts implementations to time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    register()  # makes "moesaic_sparse" a valid experts implementation
    base, moe, cephalo, _ = build(args.experts, args.seed)
    prompt = torch.randint(1, SHAPE["vocab_size"], (1, args.prompt), generator=torch.Generator().manual_seed(args.seed))
    def configure(model: nn.Module, k: int | None, impl: str | None) -> nn.Module:
        if k is not None:
            set_k(model, k)
        if impl is not None:
            model.set_experts_implementation(impl)
        return model

    n = args.experts
    runs: list[tuple[str, str, nn.Module, int | None, str | None]] = [("dense base", "-", base, None, None)]
    for k in (1, 2):
        runs += [(f"moesaic MoE N={n} k={k}", impl, moe, k, impl)
                 for impl in args.impls.split(",")]
        runs.append((f"Cephalo-style N={n} k={k}", "all experts", cephalo, k, None))
    for name, impl, model, k, ei in runs:  # warm-up
        configure(model, k, ei).generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)
    best = [float("inf")] * len(runs)
    for _ in range(args.repeats):  # round-robin, so a burst of load elsewhere hits every row alike
        for i, (name, impl, model, k, ei) in enumerate(runs):
            best[i] = min(best[i], decode_seconds(configure(model, k, ei), prompt, args.new_tokens))
    rows = [(name, impl, args.new_tokens / sec) for (name, impl, *_), sec in zip(runs, best, strict=True)]
    dense = rows[0][2]
    print(f"decode tokens/s, batch 1, prompt {args.prompt}, {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print(f"{'model':<28}{'experts impl':<14}{'tok/s':>8}{'vs dense':>10}")
    for name, impl, tps in rows:
        print(f"{name:<28}{impl:<14}{tps:8.1f}{tps / dense:10.2f}")
    for k in (1, 2):  # the goal ratio: moesaic's sparse MoE over the run-every-expert block, same k
        if "moesaic_sparse" not in args.impls:
            break
        sparse = next(t for name, impl, t in rows if name.endswith(f"k={k}") and impl == "moesaic_sparse")
        cephalo = next(t for name, impl, t in rows if name.startswith("Cephalo") and name.endswith(f"k={k}"))
        print(f"k={k}: moesaic_sparse / Cephalo-style = {sparse / cephalo:.2f}x")


if __name__ == "__main__":
    main()
