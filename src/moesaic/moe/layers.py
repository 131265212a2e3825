"""Finding the language model's decoder layers and their MLPs inside any transformers model.

A decoder layer, for moesaic, is a module with a ``post_attention_layernorm`` and an ``mlp``; the
language model's layers are the largest ``nn.ModuleList`` of them (vision towers use other names).
The hidden state entering each layer's MLP (the post-attention-layernorm output) is what gates see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moesaic.errors import UnsupportedArchitectureError

__all__ = ["DecoderLayers", "find_decoder_layers", "dense_mlp_weights", "mlp_activation", "ExpertMLP", "stack_experts"]


@dataclass
class DecoderLayers:
    path: str  # dotted path of the ModuleList inside the model, e.g. "model.language_model.layers"
    layers: nn.ModuleList

    def __len__(self) -> int:
        return len(self.layers)

    def mlps(self) -> list[nn.Module]:
        return [layer.mlp for layer in self.layers]


def _is_decoder_layer(module: nn.Module) -> bool:
    return hasattr(module, "mlp") and hasattr(module, "post_attention_layernorm")


def find_decoder_layers(model: nn.Module) -> DecoderLayers:
    """The language model's decoder layers (raises when none are found)."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(_is_decoder_layer(m) for m in module):
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no decoder layers with an 'mlp' and a 'post_attention_layernorm'",
            "moesaic merges decoder-only language models (Llama, Mistral, Qwen, Gemma shaped)",
        )
    return DecoderLayers(best[0], best[1])


# One expert's MLP for one layer: gate (I, H), up (I, H), down (H, I) in nn.Linear orientation.
ExpertMLP = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def dense_mlp_weights(mlp: nn.Module, where: str = "mlp") -> ExpertMLP:
    """(gate, up, down) weights of a gated MLP; raises when the MLP is not gate/up/down shaped.

    Separate ``gate_proj``/``up_proj`` (Llama, Mistral, Qwen, Gemma) or one fused ``gate_up_proj``
    (2I, H) whose first half is the gate (Phi-3, Phi-4, GLM: ``gate, up = linear(x).chunk(2, -1)``).
    """
    fused = getattr(mlp, "gate_up_proj", None)
    parts = [fused, getattr(mlp, "down_proj", None)] if isinstance(fused, nn.Linear) else \
        [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) for p in parts):
        raise UnsupportedArchitectureError(
            f"{where} ({type(mlp).__name__}) is not a gate_proj/up_proj/down_proj (or gate_up_proj/down_proj) MLP",
            "only gated (SwiGLU-style) MLPs can become experts; choose a Llama/Mistral/Qwen/Gemma/Phi-3-shaped model",
        )
    if any(p.bias is not None for p in parts):
        raise UnsupportedArchitectureError(
            f"{where} has biased projections", "moesaic's MoE experts have no biases; use a bias-free MLP model"
        )
    if len(parts) == 2:
        gate_up, down = (p.weight.detach() for p in parts)  # (2I, H), (H, I)
        gate, up = gate_up.chunk(2, dim=0)  # (I, H) each
        return gate, up, down
    gate, up, down = (p.weight.detach() for p in parts)
    return gate, up, down


def mlp_activation(mlp: nn.Module, where: str = "mlp") -> nn.Module:
    """The gate activation of a gated MLP (``act_fn``, or ``activation_fn`` in Phi-3/GLM)."""
    act = getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn", None)
    if not isinstance(act, nn.Module):
        raise UnsupportedArchitectureError(f"{where} ({type(mlp).__name__}) has no act_fn", "use a gate/up/down MLP model")
    return act


def stack_experts(experts: list[ExpertMLP]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused expert tensors in transformers' layout: gate_up (E, 2I, H) and down (E, H, I).

    gate_up[e] = cat(gate, up) along the output dim, matching ``linear(x, gate_up).chunk(2, -1)``.
    """
    gate_up = torch.stack([torch.cat([g, u], dim=0) for g, u, _ in experts])  # (E, 2I, H)
    down = torch.stack([d for _, _, d in experts])  # (E, H, I)
    return gate_up, down
