"""Mixtral output: a VLM whose text model is Llama/Mistral shaped gets a Mixtral ``text_config``.

Idefics3 (SmolVLM), LLaVA and LLaVA-NeXT build their language model with ``AutoModel.from_config``, so
the same VLM class loads natively with a Mixtral text model (checked on transformers 5.23). Mixtral's
router: softmax over experts → top-k → renormalise the k weights (``MixtralTopKRouter``).
A text-only Llama/Mistral becomes a ``MixtralForCausalLM``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.modelinfo import text_config
from moesaic.moe.native import construct, fill_from_base

__all__ = ["MixtralOutput", "HOST_MODEL_TYPES", "TEXT_MODEL_TYPES", "mixtral_text_config"]

HOST_MODEL_TYPES = ("idefics3", "smolvlm", "llava", "llava_next")
TEXT_MODEL_TYPES = ("llama", "mistral")


def mixtral_text_config(text: dict[str, Any], plan: MoEPlan) -> Any:
    """A MixtralConfig with the dense text config's shapes, rope, norms and token ids."""
    from transformers import MixtralConfig

    known = set(MixtralConfig().to_dict())
    kept = {k: v for k, v in text.items() if k in known and k not in ("model_type", "architectures")}
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
    description: ClassVar[str] = "Idefics3/SmolVLM, LLaVA, LLaVA-NeXT (or text Llama/Mistral) → Mixtral text model"

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
        base_cfg = base.config.to_dict()  # type: ignore[union-attr]
        if "text_config" in base_cfg:
            cfg_dict = dict(base_cfg, text_config=mixtral_text_config(base_cfg["text_config"], plan).to_dict())
            config = type(base.config).from_dict(cfg_dict)  # type: ignore[union-attr]
            model_cls = type(base)
        else:
            config, model_cls = mixtral_text_config(base_cfg, plan), MixtralForCausalLM
        config.architectures = [model_cls.__name__]
        target = construct(model_cls, config, dtype)
        with torch.no_grad():
            return fill_from_base(target, base, plan)
