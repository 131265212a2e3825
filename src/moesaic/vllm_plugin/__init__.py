"""EXPERIMENTAL vLLM plugin, not run on a GPU yet: meant to let vLLM serve Idefics3/SmolVLM MoE merges.

vLLM 0.32's Idefics3 model (which its SmolVLM model subclasses) builds its text model as a dense
``LlamaModel`` whatever ``text_config`` says, so an Idefics3/SmolVLM whose ``text_config`` is Mixtral
(moesaic's headline merge output) gets a dense text model whose weights do not match (read in vLLM 0.32.0's
source). This plugin, found by vLLM through the ``vllm.general_plugins`` entry point, registers
replacements for ``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration`` that build
the text model from ``text_config.model_type`` with vLLM's own implementation of that family
(:data:`TEXT_MODELS`); for a dense Llama text model they construct the same ``LlamaModel`` vLLM's own class
constructs. vLLM's LLaVA, LLaVA-OneVision, Mistral3 and InternVL already
build their language model from ``text_config`` (read in the same sources) and are left alone; vLLM 0.32
has no Idefics2 model at all.

This module imports no vLLM: the classes live in :mod:`moesaic.vllm_plugin.idefics3`, which vLLM imports
only when it loads such a model. ``MOESAIC_VLLM_PLUGIN=0`` turns the plugin off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from moesaic.errors import UnsupportedArchitectureError

__all__ = ["register", "TEXT_MODELS", "REPLACED", "text_model_target"]

log = logging.getLogger(__name__)

# text_config.model_type -> (vLLM module, base-model class): the decoder stack without the LM head, as
# vLLM's Idefics3 wrapper expects (it owns the head), and one that loads its own checkpoint weights (expert
# tensors included): read from vLLM 0.32.0's sources. Qwen2-MoE is absent: its expert loading lives in
# Qwen2MoeForCausalLM, not in the stack.
TEXT_MODELS: dict[str, tuple[str, str]] = {
    "llama": ("vllm.model_executor.models.llama", "LlamaModel"),
    "mixtral": ("vllm.model_executor.models.mixtral", "MixtralModel"),
    "qwen3_moe": ("vllm.model_executor.models.qwen3_moe", "Qwen3MoeModel"),
}

# vLLM architecture name -> "module:class" of the replacement
REPLACED: dict[str, str] = {
    "Idefics3ForConditionalGeneration": "moesaic.vllm_plugin.idefics3:MoeIdefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration": "moesaic.vllm_plugin.idefics3:MoeSmolVLMForConditionalGeneration",
}


def text_model_target(text_config: Any) -> tuple[str, str]:
    """``(module, class)`` of the vLLM decoder stack for ``text_config`` (an object or a dict)."""
    kind = text_config.get("model_type") if isinstance(text_config, dict) else getattr(text_config, "model_type", None)
    if kind not in TEXT_MODELS:
        raise UnsupportedArchitectureError(
            f"moesaic's vLLM plugin cannot build an Idefics3/SmolVLM text model of type {kind!r}",
            f"merge with a text family it knows ({', '.join(sorted(TEXT_MODELS))}), or serve with --engine moesaic")
    return TEXT_MODELS[kind]


def register() -> None:
    """The ``vllm.general_plugins`` entry point: vLLM calls it in every process it starts."""
    if os.environ.get("MOESAIC_VLLM_PLUGIN", "1") == "0":
        return
    from vllm import ModelRegistry

    for arch, target in REPLACED.items():
        ModelRegistry.register_model(arch, target)  # lazy "module:class": nothing is imported yet
    log.info("moesaic vLLM plugin (experimental): %s build their text model from text_config", ", ".join(REPLACED))
