"""Mixtral output: a VLM whose text model is Llama/Mistral shaped gets a Mixtral ``text_config``.

Idefics3 (SmolVLM), Idefics2, Mistral3, LLaVA and LLaVA-NeXT build their language model with
``AutoModel.from_config``, so the same VLM class loads natively with a Mixtral text model (each host
is merged and reloaded with plain transformers in tests/moe). Mixtral's
router: softmax over experts → top-k → renormalise the k weights (``MixtralTopKRouter``).
A text-only Llama/Mistral becomes a ``MixtralForCausalLM``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.modelinfo import text_config
from moesaic.moe.native import construct, fill_from_base, host_config, host_with_text_model, moe_text_kwargs

__all__ = ["MixtralOutput", "HOST_MODEL_TYPES", "TEXT_MODEL_TYPES", "mixtral_text_config"]

HOST_MODEL_TYPES = ("idefics3", "smolvlm", "idefics2", "mistral3", "llava", "llava_next")
TEXT_MODEL_TYPES = ("llama", "mistral")


def mixtral_text_config(text: dict[str, Any], plan: MoEPlan) -> Any:
    """A MixtralConfig with the dense text config's shapes, rope, norms and token ids."""
    from transformers import MixtralConfig

    kept = moe_text_kwargs(text, MixtralConfig)
    kept.update(
        num_local_experts=plan.num_experts,
        num_experts_per_tok=plan.top_k,
        intermediate_size=plan.intermediate_size,
        sliding_window=text.get("sliding_window"),
        output_router_logits=False,
    )
    return MixtralConfig(**kept)


class MixtralOutput(OutputArchitecture):
    name: ClassVar[str] = "mixtral"
    streams: ClassVar[bool] = True
    description: ClassVar[str] = ("Idefics3/SmolVLM, Idefics2, Mistral3, LLaVA, LLaVA-NeXT with a Llama/Mistral text "
                                  "model (or a text-only Llama/Mistral) → Mixtral text model")

    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        mtype = config.get("model_type")
        text = text_config(config)
        ttype = text.get("model_type")
        if text is config and mtype not in TEXT_MODEL_TYPES:
            return False, f"{mtype!r} is neither a Llama/Mistral text model nor a VLM with a text_config"
        if text is not config and mtype not in HOST_MODEL_TYPES:
            return False, f"VLM {mtype!r} is not one whose class accepts a Mixtral text model ({', '.join(HOST_MODEL_TYPES)})"
        if ttype not in TEXT_MODEL_TYPES:
            return False, f"its text model is {ttype!r}, not Llama/Mistral shaped"
        if text.get("attention_bias") or text.get("mlp_bias"):
            return False, "its text model uses attention/MLP biases, which Mixtral has not"
        return True, f"{mtype} with a {ttype} text model maps onto Mixtral"

    def build(self, base: nn.Module, plan: MoEPlan) -> nn.Module:
        from transformers import MixtralForCausalLM

        dtype = next(base.parameters()).dtype
        text = base.config.get_text_config().to_dict()  # type: ignore[union-attr]
        config, model_cls = host_with_text_model(base, mixtral_text_config(text, plan), MixtralForCausalLM)
        target = construct(model_cls, config, dtype)
        with torch.no_grad():
            return fill_from_base(target, base, plan)

    def output_config(self, base_config: Any, plan: MoEPlan) -> Any:
        from transformers import MixtralForCausalLM

        moe_text = mixtral_text_config(base_config.get_text_config().to_dict(), plan)
        return host_config(base_config, moe_text, MixtralForCausalLM)[0]

    # transformers' Mixtral checkpoint names: w1 = gate, w3 = up, w2 = down (as save_pretrained writes them)
    def router_key(self, layer: str) -> str:
        return f"{layer}.block_sparse_moe.gate.weight"

    def expert_keys(self, layer: str, expert: int) -> tuple[str, str, str]:
        p = f"{layer}.block_sparse_moe.experts.{expert}"
        return f"{p}.w1.weight", f"{p}.w3.weight", f"{p}.w2.weight"
