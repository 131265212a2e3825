"""Qwen2-MoE output: a VLM whose text model is Qwen2 gets a Qwen2-MoE ``text_config``.

LLaVA-OneVision, InternVL, LLaVA and LLaVA-NeXT build their language model with
``AutoModel.from_config``, so the same VLM class loads natively with a ``Qwen2MoeModel`` (tests/moe
merge and reload each with plain transformers). A text-only Qwen2 becomes ``Qwen2MoeForCausalLM``.

Qwen2-MoE's block is routed experts plus a ``shared_expert`` scaled by ``sigmoid(shared_expert_gate)``.
This family writes routed experts only: the shared expert gets width 0 (``shared_expert_intermediate_size
= 0``), so it adds exactly zero; ``norm_topk_prob=True`` makes the router softmax → top-k →
renormalise, the same as Mixtral's. Qwen2 and Qwen2-MoE attention both carry q/k/v biases.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.modelinfo import text_config
from moesaic.moe.native import construct, fill_from_base, host_config, host_with_text_model, moe_text_kwargs

__all__ = ["Qwen2MoeOutput", "HOST_MODEL_TYPES", "qwen2_moe_text_config", "shared_expert_tensors"]

HOST_MODEL_TYPES = ("llava_onevision", "internvl", "llava", "llava_next")


def qwen2_moe_text_config(text: dict[str, Any], plan: MoEPlan) -> Any:
    """A Qwen2MoeConfig with the dense Qwen2 config's shapes, rope, windows and token ids; no shared expert."""
    from transformers import Qwen2MoeConfig

    kept = moe_text_kwargs(text, Qwen2MoeConfig)
    kept.update(
        num_experts=plan.num_experts,
        num_experts_per_tok=plan.top_k,
        moe_intermediate_size=plan.intermediate_size,
        intermediate_size=plan.intermediate_size,
        shared_expert_intermediate_size=0,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        qkv_bias=True,
        output_router_logits=False,
    )
    return Qwen2MoeConfig(**kept)


def shared_expert_tensors(layer: str, hidden: int) -> dict[str, torch.Tensor]:
    """``layer``'s width-0 shared expert and its gate (zeros: the shared expert adds nothing)."""
    p = f"{layer}.mlp.shared_expert"
    return {
        f"{p}.gate_proj.weight": torch.zeros(0, hidden),  # (0, H)
        f"{p}.up_proj.weight": torch.zeros(0, hidden),  # (0, H)
        f"{p}.down_proj.weight": torch.zeros(hidden, 0),  # (H, 0)
        f"{p}_gate.weight": torch.zeros(1, hidden),  # (1, H)
    }


class Qwen2MoeOutput(OutputArchitecture):
    name: ClassVar[str] = "qwen2_moe"
    streams: ClassVar[bool] = True
    description: ClassVar[str] = ("LLaVA-OneVision, InternVL, LLaVA, LLaVA-NeXT with a Qwen2 text model (or a "
                                  "text-only Qwen2) → Qwen2-MoE text model, routed experts only")

    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        mtype = config.get("model_type")
        text = text_config(config)
        ttype = text.get("model_type")
        if text is config and mtype != "qwen2":
            return False, f"{mtype!r} is neither a Qwen2 text model nor a VLM with a text_config"
        if text is not config and mtype not in HOST_MODEL_TYPES:
            return False, f"VLM {mtype!r} is not one whose class accepts a Qwen2-MoE text model ({', '.join(HOST_MODEL_TYPES)})"
        if ttype != "qwen2":
            return False, f"its text model is {ttype!r}, not Qwen2"
        return True, f"{mtype} with a qwen2 text model maps onto Qwen2-MoE (no shared expert)"

    def build(self, base: nn.Module, plan: MoEPlan) -> nn.Module:
        from transformers import Qwen2MoeForCausalLM

        from moesaic.moe.layers import find_decoder_layers

        dtype = next(base.parameters()).dtype
        text = base.config.get_text_config().to_dict()  # type: ignore[union-attr]
        config, model_cls = host_with_text_model(base, qwen2_moe_text_config(text, plan), Qwen2MoeForCausalLM)
        target = construct(model_cls, config, dtype)
        layers = find_decoder_layers(target)
        extra: dict[str, torch.Tensor] = {}
        for i in range(len(layers)):
            extra.update(shared_expert_tensors(f"{layers.path}.{i}", int(text["hidden_size"])))
        with torch.no_grad():
            return fill_from_base(target, base, plan, extra)

    def output_config(self, base_config: Any, plan: MoEPlan) -> Any:
        from transformers import Qwen2MoeForCausalLM

        moe_text = qwen2_moe_text_config(base_config.get_text_config().to_dict(), plan)
        return host_config(base_config, moe_text, Qwen2MoeForCausalLM)[0]

    # transformers' Qwen2-MoE checkpoint names, as save_pretrained writes them
    def router_key(self, layer: str) -> str:
        return f"{layer}.mlp.gate.weight"

    def expert_keys(self, layer: str, expert: int) -> tuple[str, str, str]:
        p = f"{layer}.mlp.experts.{expert}"
        return f"{p}.gate_proj.weight", f"{p}.up_proj.weight", f"{p}.down_proj.weight"

    def extra_tensors(self, layer: str, hidden: int) -> dict[str, torch.Tensor]:
        return shared_expert_tensors(layer, hidden)
