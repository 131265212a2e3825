"""moesaic's own sparse MoE block, swapped in for a dense gated MLP (the generic output).

Same routing and layout as transformers' Mixtral so weights move between them unchanged:
router softmax over experts → top-k → renormalise the k weights; experts stored fused as
``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I). Only the selected experts run on a token
(cost ∝ k, not N as in Cephalo's run-every-expert block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moesaic.moe.fast_experts import FEW_TOKENS, few_token_experts

__all__ = ["TopKRouter", "FusedExperts", "SparseMoeBlock"]


class TopKRouter(nn.Module):
    """Returns (router_logits, top-k weights, top-k indices), as transformers' MoE routers do."""

    def __init__(self, num_experts: int, hidden: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.zeros(num_experts, hidden))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_states = hidden_states.reshape(-1, self.weight.shape[1])  # (tokens, hidden)
        logits = F.linear(hidden_states, self.weight)  # (tokens, experts)
        probs = torch.softmax(logits.float(), dim=-1)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)  # (tokens, k)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return logits, top_w.to(hidden_states.dtype), top_i


class FusedExperts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, intermediate: int, act: nn.Module) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.gate_up_proj = nn.Parameter(torch.zeros(num_experts, 2 * intermediate, hidden))  # (E, 2I, H)
        self.down_proj = nn.Parameter(torch.zeros(num_experts, hidden, intermediate))  # (E, H, I)
        self.act_fn = act

    def _apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:  # (n, 2I) → (n, I)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act_fn(gate) * up

    def forward(self, x: torch.Tensor, top_i: torch.Tensor, top_w: torch.Tensor) -> torch.Tensor:
        # x: (tokens, hidden); top_i, top_w: (tokens, k)
        if x.shape[0] <= FEW_TOKENS:  # decode: skip the per-expert gather/scatter (moe/fast_experts.py)
            return few_token_experts(x, top_i, top_w, self.gate_up_proj, self.down_proj, self._apply_gate)
        out = torch.zeros_like(x)
        for e in torch.unique(top_i).tolist():
            token_idx, slot = torch.where(top_i == e)
            y = F.linear(self._apply_gate(F.linear(x[token_idx], self.gate_up_proj[e])), self.down_proj[e])  # (n, H)
            out.index_add_(0, token_idx, y * top_w[token_idx, slot, None])
        return out


class SparseMoeBlock(nn.Module):
    """Drop-in replacement for a dense ``mlp``: (batch, seq, hidden) → (batch, seq, hidden)."""

    def __init__(self, num_experts: int, top_k: int, hidden: int, intermediate: int, act: nn.Module) -> None:
        super().__init__()
        self.gate = TopKRouter(num_experts, hidden, top_k)
        self.experts = FusedExperts(num_experts, hidden, intermediate, act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape  # (batch, seq, hidden)
        flat = hidden_states.reshape(-1, shape[-1])  # (tokens, hidden)
        _, top_w, top_i = self.gate(flat)
        return self.experts(flat, top_i, top_w).reshape(shape)
