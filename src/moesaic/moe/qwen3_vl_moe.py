"""Qwen3-VL-MoE output: a dense Qwen3-VL becomes ``Qwen3VLMoeForConditionalGeneration``.

Vision weights keep their names and shapes; every text layer's MLP becomes a sparse block with
``mlp.gate.weight`` (E, H), ``mlp.experts.gate_up_proj`` (E, 2I, H) and ``mlp.experts.down_proj``
(E, H, I). All layers are sparse (``decoder_sparse_step=1``, ``mlp_only_layers=[]``). The router in
transformers 5.23 (``Qwen3VLMoeTextTopKRouter``) is softmax → top-k → renormalise, as Mixtral's.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.native import construct, fill_from_base

__all__ = ["Qwen3VLMoeOutput", "qwen3_vl_moe_config"]


def qwen3_vl_moe_config(base_cfg: dict[str, Any], plan: MoEPlan) -> Any:
    from transformers import Qwen3VLMoeConfig

    cfg = copy.deepcopy(base_cfg)
    cfg["model_type"] = "qwen3_vl_moe"
    cfg["architectures"] = ["Qwen3VLMoeForConditionalGeneration"]
    text = cfg["text_config"]
    text["model_type"] = "qwen3_vl_moe_text"
    text.update(
        num_experts=plan.num_experts,
        num_experts_per_tok=plan.top_k,
        moe_intermediate_size=plan.intermediate_size,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        output_router_logits=False,
    )
    cfg["vision_config"]["model_type"] = "qwen3_vl_moe_vision"
    return Qwen3VLMoeConfig.from_dict(cfg)


class Qwen3VLMoeOutput(OutputArchitecture):
    name: ClassVar[str] = "qwen3_vl_moe"
    description: ClassVar[str] = "dense Qwen3-VL → Qwen3VLMoeForConditionalGeneration"

    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        mtype = config.get("model_type")
        if mtype != "qwen3_vl":
            return False, f"only dense Qwen3-VL (model_type 'qwen3_vl') maps onto it, not {mtype!r}"
        return True, "dense Qwen3-VL maps onto Qwen3-VL-MoE"

    def build(self, base: nn.Module, plan: MoEPlan) -> nn.Module:
        from transformers import Qwen3VLMoeForConditionalGeneration

        dtype = next(base.parameters()).dtype
        config = qwen3_vl_moe_config(base.config.to_dict(), plan)  # type: ignore[union-attr]
        target = construct(Qwen3VLMoeForConditionalGeneration, config, dtype)
        with torch.no_grad():
            return fill_from_base(target, base, plan)
