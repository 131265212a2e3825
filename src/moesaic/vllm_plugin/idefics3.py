"""EXPERIMENTAL, not run on a GPU yet: vLLM model classes for Idefics3/SmolVLM with the text model built
from ``text_config`` (see :mod:`moesaic.vllm_plugin`). Imported by vLLM only; it imports vLLM.

The classes keep vLLM's Idefics3 behaviour (processor registration, vision tower, connector, image merging,
weight names ``model.text_model.*`` and ``lm_head``) and change one thing: the class of ``model.text_model``.
The constructors are replaced rather than extended because vLLM's name the text class inline.
"""

from __future__ import annotations

import importlib

from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.model_executor.models.idefics3 import (
    Idefics3Connector,
    Idefics3ForConditionalGeneration,
    Idefics3Model,
    Idefics3VisionTransformer,
)
from vllm.model_executor.models.smolvlm import SmolVLMForConditionalGeneration
from vllm.model_executor.models.utils import maybe_prefix

from moesaic.vllm_plugin import text_model_target

__all__ = ["MoeIdefics3ForConditionalGeneration", "MoeSmolVLMForConditionalGeneration", "text_model_class"]


def text_model_class(text_config: object) -> type[nn.Module]:
    module, name = text_model_target(text_config)
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


class TextFromConfigIdefics3Model(Idefics3Model):
    """Vision tower + connector as vLLM builds them; the decoder stack of ``text_config``'s family."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        nn.Module.__init__(self)
        config = vllm_config.model_config.hf_config
        self.config = config
        self.vocab_size = config.text_config.vocab_size
        self.vision_model = Idefics3VisionTransformer(
            config.vision_config, quant_config=vllm_config.quant_config, prefix=maybe_prefix(prefix, "vision_model"))
        self.connector = Idefics3Connector(config, vllm_config.quant_config, prefix=maybe_prefix(prefix, "connector"))
        text_cls = text_model_class(config.text_config)
        self.text_model = text_cls(vllm_config=vllm_config.with_hf_config(config.text_config),
                                   prefix=maybe_prefix(prefix, "text_model"))
        patches_per_side = config.vision_config.image_size // config.vision_config.patch_size
        self.image_seq_len = int(patches_per_side**2 / config.scale_factor**2)  # tokens per image tile
        self.image_token_id = config.image_token_id


class _TextFromConfig:
    """Constructor shared by the Idefics3 and SmolVLM replacements."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        nn.Module.__init__(self)  # type: ignore[arg-type]
        config = vllm_config.model_config.hf_config
        self.config = config
        self.multimodal_config = vllm_config.model_config.multimodal_config
        towers = {"image": (Idefics3VisionTransformer, Idefics3Connector)}
        with self._mark_composite_model(  # type: ignore[attr-defined]
            vllm_config, language_targets=text_model_class(config.text_config), tower_targets=towers
        ):
            self.model = TextFromConfigIdefics3Model(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.image_token_id = config.image_token_id
        text = config.text_config
        self.lm_head = ParallelLMHead(text.vocab_size, text.hidden_size, quant_config=vllm_config.quant_config,
                                      prefix=maybe_prefix(prefix, "lm_head"))
        if text.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.text_model.embed_tokens)
        self.logits_processor = LogitsProcessor(text.vocab_size)


class MoeIdefics3ForConditionalGeneration(_TextFromConfig, Idefics3ForConditionalGeneration):
    """``Idefics3ForConditionalGeneration`` whose text model follows ``text_config`` (Mixtral, Qwen3-MoE, Llama)."""


class MoeSmolVLMForConditionalGeneration(_TextFromConfig, SmolVLMForConditionalGeneration):
    """``SmolVLMForConditionalGeneration`` whose text model follows ``text_config``."""
