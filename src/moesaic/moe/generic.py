"""Generic output: any decoder whose MLP is gate/up/down shaped, with moesaic's own sparse block swapped in.

Separate ``gate_proj``/``up_proj`` or one fused ``gate_up_proj`` (Phi-3, Phi-4, GLM) both become the
block's fused (E, 2I, H) experts. Mllama's cross-attention layers keep their dense MLP
(``"sparse_layers"`` in the config section lists the layers that were swapped). Families whose layer has
no ``post_attention_layernorm`` (Cohere's parallel attention + MLP) are refused from ``config.json``.

Saved as the base's ``config.json`` plus a ``"moesaic": {"kind": "moesaic_generic_moe", ...}`` section,
the weights in ``moesaic_moe.safetensors`` (a name plain ``from_pretrained`` does not pick up, so the
MoE is never silently loaded as the dense base) and the processor. ``moesaic.load(path)`` routes here
through the backend registry; :func:`load_generic_moe` returns (model, processor). No remote code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from moesaic.atomic import atomic_write_text
from moesaic.errors import ModelLoadError
from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.layers import find_decoder_layers, mlp_activation, stack_experts
from moesaic.moe.modelinfo import text_model_type
from moesaic.moe.sparse import SparseMoeBlock

__all__ = ["GenericOutput", "GenericMoEBackend", "load_generic_moe", "swap_in_moe", "KIND", "WEIGHTS_NAME"]

KIND = "moesaic_generic_moe"
WEIGHTS_NAME = "moesaic_moe.safetensors"
# Text model families whose MLP is gate_proj/up_proj/down_proj (or fused gate_up_proj) without biases.
GATED_TEXT_TYPES = (
    "llama", "mistral", "qwen2", "qwen3", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text", "gemma",
    "gemma2", "gemma3_text", "smollm3", "olmo", "olmo2", "granite", "helium", "glm", "ernie4_5", "phi3",
    "mllama_text_model",
)
# Families with a gated MLP that this output still cannot merge, and why (checked before loading weights).
REFUSED_TEXT_TYPES = {
    "cohere": "Cohere runs attention and MLP in parallel from one input_layernorm (no post_attention_layernorm "
              "for the gates to read)",
    "cohere2": "Cohere2 runs attention and MLP in parallel from one input_layernorm (no post_attention_layernorm)",
}


def swap_in_moe(model: nn.Module, num_experts: int, top_k: int, intermediate: int,
                layers: list[int] | None = None) -> list[SparseMoeBlock]:
    """Replace the dense ``mlp`` of decoder layers ``layers`` (default: all) by an (empty)
    :class:`SparseMoeBlock`, in place."""
    decoder = find_decoder_layers(model)
    blocks = []
    for i in range(len(decoder)) if layers is None else layers:
        layer = decoder.layers[i]
        act = mlp_activation(layer.mlp, f"layer {i} mlp")
        hidden = layer.post_attention_layernorm.weight.shape[0]
        block = SparseMoeBlock(num_experts, top_k, hidden, intermediate, act)
        ref = next(layer.mlp.parameters())
        layer.mlp = block.to(device=ref.device, dtype=ref.dtype)
        blocks.append(layer.mlp)
    return blocks


class GenericOutput(OutputArchitecture):
    name: ClassVar[str] = "generic"
    description: ClassVar[str] = "any gate/up/down-MLP decoder, moesaic's sparse block (load with moesaic.load)"
    native: ClassVar[bool] = False

    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        ttype = text_model_type(config)
        if ttype in REFUSED_TEXT_TYPES:
            return False, REFUSED_TEXT_TYPES[ttype]
        if ttype in GATED_TEXT_TYPES:
            return True, f"text model {ttype!r} has a gate/up/down MLP"
        return False, f"text model {ttype!r} is not one with a gate/up/down MLP ({', '.join(GATED_TEXT_TYPES[:6])}, …)"

    def build(self, base: nn.Module, plan: MoEPlan) -> nn.Module:
        """Swaps the MoE blocks into ``base`` itself (no copy) and returns it."""
        from moesaic.moe.layers import dense_mlp_weights

        mlps = find_decoder_layers(base).mlps()
        for i in range(len(mlps)) if plan.layers is None else plan.layers:
            dense_mlp_weights(mlps[i], where=f"layer {i} mlp")  # raises when not gate/up/down shaped
        blocks = swap_in_moe(base, plan.num_experts, plan.top_k, plan.intermediate_size, plan.layers)
        with torch.no_grad():
            for block, gate, experts in zip(blocks, plan.gates, plan.experts, strict=True):
                gate_up, down = stack_experts(experts)  # (E, 2I, H), (E, H, I)
                block.gate.weight.copy_(gate)  # (E, H)
                block.experts.gate_up_proj.copy_(gate_up)
                block.experts.down_proj.copy_(down)
        base.config.moesaic = {  # type: ignore[union-attr]
            "kind": KIND, "num_experts": plan.num_experts, "experts_per_token": plan.top_k,
            "intermediate_size": plan.intermediate_size, "experts": plan.labels,
        }
        if plan.layers is not None and plan.layers != list(range(len(mlps))):
            base.config.moesaic["sparse_layers"] = list(plan.layers)  # type: ignore[union-attr]
        return base

    def save(self, model: nn.Module, processor: Any, folder: Path) -> None:
        from safetensors.torch import save_model

        model.config.save_pretrained(folder)  # type: ignore[union-attr]
        cfg_file = folder / "config.json"
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
        data["moesaic"] = model.config.moesaic  # type: ignore[union-attr]
        atomic_write_text(cfg_file, json.dumps(data, indent=2, sort_keys=True))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(folder)  # type: ignore[union-attr]
        save_model(model, str(folder / WEIGHTS_NAME))
        if processor is not None:
            processor.save_pretrained(folder)

    def load(self, folder: Path) -> nn.Module:
        return load_generic_moe(folder)[0]


def load_generic_moe(path: str | Path, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    """(model, processor) of a generic moesaic MoE folder, built from its config with no remote code."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    from moesaic.moe.loading import load_processor, model_class_for

    folder = Path(path)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS_NAME}", "point to a folder written by `moesaic merge`")
    config = AutoConfig.from_pretrained(folder)
    spec = getattr(config, "moesaic", None)
    if not isinstance(spec, dict) or spec.get("kind") != KIND:
        raise ModelLoadError(f"{folder}/config.json has no moesaic generic MoE section", "re-run `moesaic merge`")
    model = model_class_for(config)._from_config(config, dtype=dtype or getattr(config, "dtype", None))
    sparse = spec.get("sparse_layers")
    swap_in_moe(model, int(spec["num_experts"]), int(spec["experts_per_token"]), int(spec["intermediate_size"]),
                [int(i) for i in sparse] if sparse is not None else None)
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights} does not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}",
            "the folder is damaged or from another moesaic version; re-run `moesaic merge`",
        )
    return model.eval(), load_processor(str(folder))


def __getattr__(name: str) -> Any:  # the backend class lives in backend.py (keeps this file small)
    if name == "GenericMoEBackend":
        from moesaic.moe.backend import GenericMoEBackend

        return GenericMoEBackend
    raise AttributeError(name)
