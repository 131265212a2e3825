"""Qwen3.5-MoE output: a dense Qwen3.5 VLM becomes ``Qwen3_5MoeForConditionalGeneration``.

Dense Qwen3.5 and Qwen3.5-MoE share the vision tower and the hybrid text stack (gated-DeltaNet
linear-attention layers between full-attention layers, ``layer_types``); only each layer's MLP differs.
The MoE block is routed experts (router softmax → top-k → renormalise, as Mixtral's) plus a shared
expert scaled by ``sigmoid(shared_expert_gate)``; as in ``qwen2_moe``, the shared expert gets width 0 and
adds exactly zero. Experts are stored fused: ``mlp.experts.gate_up_proj`` (E, 2I, H), ``down_proj`` (E, H, I).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.native import construct, fill_from_base
from moesaic.moe.qwen2_moe import shared_expert_tensors

__all__ = ["Qwen3_5MoeOutput", "qwen3_5_moe_config"]


def qwen3_5_moe_config(base_cfg: dict[str, Any], plan: MoEPlan) -> Any:
    from transformers import Qwen3_5MoeConfig

    cfg = copy.deepcopy(base_cfg)
    cfg["model_type"] = "qwen3_5_moe"
    cfg["architectures"] = ["Qwen3_5MoeForConditionalGeneration"]
    text = cfg["text_config"]
    text["model_type"] = "qwen3_5_moe_text"
    text.pop("intermediate_size", None)
    text.update(num_experts=plan.num_experts, num_experts_per_tok=plan.top_k,
                moe_intermediate_size=plan.intermediate_size, shared_expert_intermediate_size=0,
                output_router_logits=False)
    cfg["vision_config"]["model_type"] = "qwen3_5_moe_vision"
    return Qwen3_5MoeConfig.from_dict(cfg)


class Qwen3_5MoeOutput(OutputArchitecture):
    name: ClassVar[str] = "qwen3_5_moe"
    description: ClassVar[str] = "dense Qwen3.5 → Qwen3_5MoeForConditionalGeneration, routed experts only"

    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        mtype = config.get("model_type")
        if mtype != "qwen3_5":
            return False, f"only dense Qwen3.5 (model_type 'qwen3_5') maps onto it, not {mtype!r}"
        return True, "dense Qwen3.5 maps onto Qwen3.5-MoE (no shared expert)"

    def build(self, base: nn.Module, plan: MoEPlan) -> nn.Module:
        from transformers import Qwen3_5MoeForConditionalGeneration

        from moesaic.moe.layers import find_decoder_layers

        dtype = next(base.parameters()).dtype
        config = qwen3_5_moe_config(base.config.to_dict(), plan)  # type: ignore[union-attr]
        target = construct(Qwen3_5MoeForConditionalGeneration, config, dtype)
        layers = find_decoder_layers(target)
        hidden = int(config.text_config.hidden_size)
        extra: dict[str, torch.Tensor] = {}
        for i in range(len(layers)):
            extra.update(shared_expert_tensors(f"{layers.path}.{i}", hidden))
        with torch.no_grad():
            return fill_from_base(target, base, plan, extra)
