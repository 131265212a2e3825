"""Filling a native transformers MoE model's own state dict from a dense base and the experts.

The target is constructed from its config (so the library decides names and the on-disk format); every
non-MLP tensor is copied from the base under the same name, and each layer's ``mlp.gate.weight``
(E, H), ``mlp.experts.gate_up_proj`` (E, 2I, H) and ``mlp.experts.down_proj`` (E, H, I) come from the plan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moesaic.errors import ModelLoadError
from moesaic.moe.arch import MoEPlan
from moesaic.moe.layers import find_decoder_layers, stack_experts

__all__ = ["fill_from_base", "moe_tensors", "construct"]


def moe_tensors(prefix: str, plan: MoEPlan, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``{prefix}.{i}.mlp.gate.weight`` / ``experts.gate_up_proj`` / ``experts.down_proj`` for every layer."""
    out: dict[str, torch.Tensor] = {}
    for i, (gate, experts) in enumerate(zip(plan.gates, plan.experts, strict=True)):
        gate_up, down = stack_experts(experts)  # (E, 2I, H), (E, H, I)
        out[f"{prefix}.{i}.mlp.gate.weight"] = gate.to(dtype)  # (E, H)
        out[f"{prefix}.{i}.mlp.experts.gate_up_proj"] = gate_up.to(dtype)
        out[f"{prefix}.{i}.mlp.experts.down_proj"] = down.to(dtype)
    return out


def construct(model_cls: Any, config: Any, dtype: torch.dtype) -> nn.Module:
    """An (uninitialised-content) target model built from its config on CPU."""
    model = model_cls._from_config(config, dtype=dtype)
    return model.eval()


def fill_from_base(target: nn.Module, base: nn.Module, plan: MoEPlan) -> nn.Module:
    """Load base + plan tensors into ``target`` strictly (every target tensor must be accounted for)."""
    layers = find_decoder_layers(target)
    if len(layers) != len(plan.gates):
        raise ModelLoadError(
            f"target has {len(layers)} decoder layers but the plan has {len(plan.gates)}",
            "base and experts must have the same number of layers",
        )
    wanted = target.state_dict()
    dtype = next(iter(wanted.values())).dtype
    filled = moe_tensors(layers.path, plan, dtype)
    base_sd = base.state_dict()
    for key, ref in wanted.items():
        if key in filled:
            continue
        src = base_sd.get(key)
        if src is None or src.shape != ref.shape:
            got = "missing" if src is None else f"shape {tuple(src.shape)}"
            raise ModelLoadError(
                f"cannot fill {key} {tuple(ref.shape)} of {type(target).__name__} from the base ({got})",
                "the base model's layout differs from what this output architecture expects; try generic",
            )
        filled[key] = src.to(dtype)
    target.load_state_dict(filled, strict=True)
    return target
