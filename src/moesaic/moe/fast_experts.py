"""A CPU decode path for MoE experts, registered with transformers as the experts implementation
``"moesaic_sparse"``.

transformers' ``eager`` experts loop builds a one-hot mask over all experts, finds the experts hit, and
gathers and scatters tokens for each — about a dozen small tensor ops per layer. At decode time (one token
per sequence) those ops cost as much as the expert's matrix products on a CPU: benchmarks/moe_decode.py
measured the eager MoE at k=1 at 0.87× the dense base. Here, when a call carries few tokens, each token's
k experts are read off ``top_k_index`` and applied directly (two matrix products each); larger calls
(prefill, big batches) fall back to the eager loop. The arithmetic is the same, so outputs match eager.

Only a loaded model's dispatch changes: saved MoEs stay plain transformers models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IMPLEMENTATION", "FEW_TOKENS", "few_token_experts", "register"]

IMPLEMENTATION = "moesaic_sparse"
FEW_TOKENS = 8  # calls with at most this many tokens take the direct path


def few_token_experts(x: torch.Tensor, top_i: torch.Tensor, top_w: torch.Tensor, gate_up: torch.Tensor,
                      down: torch.Tensor, apply_gate: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mixture output for a few tokens, each through its own top-k experts.

    x: (tokens, H); top_i, top_w: (tokens, k); gate_up: (E, 2I, H); down: (E, H, I). Returns (tokens, H).
    Indices ≥ E (expert-parallel padding) contribute nothing, as in transformers' loop.
    """
    num_experts = gate_up.shape[0]
    rows = []
    for t, experts in enumerate(top_i.tolist()):
        h = x[t : t + 1]  # (1, H)
        acc = torch.zeros_like(h)
        for j, e in enumerate(experts):
            if e >= num_experts:
                continue
            y = F.linear(apply_gate(F.linear(h, gate_up[e])), down[e])  # (1, H)
            acc = acc + y * top_w[t, j].to(y.dtype)
        rows.append(acc)
    return torch.cat(rows, dim=0)


def _experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                     top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' experts-implementation signature: (S, H), (S, k), (S, k) → (S, H)."""
    plain = (getattr(self, "has_gate", True) and not getattr(self, "has_bias", False)
             and not getattr(self, "is_transposed", False) and getattr(self, "is_concatenated", True)
             and not getattr(self, "has_post_expert_norm", False))
    if hidden_states.shape[0] > FEW_TOKENS or not plain:
        eager = type(self).forward.__wrapped__  # the class's own loop, kept by use_experts_implementation
        return eager(self, hidden_states, top_k_index, top_k_weights)
    out = few_token_experts(hidden_states, top_k_index, top_k_weights, self.gate_up_proj, self.down_proj,
                            self._apply_gate)
    return out.to(hidden_states.dtype)


def register() -> str:
    """Make ``"moesaic_sparse"`` a valid ``experts_implementation`` (idempotent); returns the name."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, _experts_forward)
    return IMPLEMENTATION
