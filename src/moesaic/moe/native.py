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

__all__ = ["fill_from_base", "moe_tensors", "construct", "host_config", "host_with_text_model", "moe_text_kwargs"]


def moe_text_kwargs(text: dict[str, Any], config_cls: Any) -> dict[str, Any]:
    """The dense text config's keys that ``config_cls`` (an MoE text config class) also has."""
    known = set(config_cls().to_dict())
    return {k: v for k, v in text.items() if k in known and k not in ("model_type", "architectures")}


def host_config(base_config: Any, moe_text: Any, causal_lm_cls: Any) -> tuple[Any, Any]:
    """(config, model class) of the output: the VLM host's own class with ``moe_text`` as its
    ``text_config`` (hosts that build the language model with ``AutoModel.from_config``), or the MoE
    causal LM for a text-only base."""
    from moesaic.moe.loading import model_class_for

    base_cfg = base_config.to_dict()
    if "text_config" in base_cfg:
        config = type(base_config).from_dict(dict(base_cfg, text_config=moe_text.to_dict()))
        model_cls = model_class_for(base_config)
    else:
        config, model_cls = moe_text, causal_lm_cls
    config.architectures = [model_cls.__name__]
    return config, model_cls


def host_with_text_model(base: nn.Module, moe_text: Any, causal_lm_cls: Any) -> tuple[Any, Any]:
    """:func:`host_config` for a loaded base (a VLM keeps the base's own class)."""
    config, model_cls = host_config(base.config, moe_text, causal_lm_cls)
    if "text_config" in base.config.to_dict():  # type: ignore[union-attr]
        model_cls = type(base)
        config.architectures = [model_cls.__name__]
    return config, model_cls


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


def fill_from_base(target: nn.Module, base: nn.Module, plan: MoEPlan,
                   extra: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Load base + plan (+ ``extra``) tensors into ``target`` strictly (every target tensor must be accounted for)."""
    layers = find_decoder_layers(target)
    if len(layers) != len(plan.gates):
        raise ModelLoadError(
            f"target has {len(layers)} decoder layers but the plan has {len(plan.gates)}",
            "base and experts must have the same number of layers",
        )
    wanted = target.state_dict()
    dtype = next(iter(wanted.values())).dtype
    filled = moe_tensors(layers.path, plan, dtype)
    filled.update({k: v.to(dtype) for k, v in (extra or {}).items()})
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
