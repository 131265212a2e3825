"""Working with merged MoE models of any output family: load, save, find routers, record routing.

Every family's router (transformers' ``MixtralTopKRouter``, ``Qwen3VLMoeTextTopKRouter`` and moesaic's
``TopKRouter``) lives at ``layer.mlp.gate``, holds ``weight`` (E, H) and returns
(router_logits, top-k weights, top-k indices), so one forward hook records all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moesaic.errors import ModelLoadError, MoesaicError
from moesaic.moe.layers import find_decoder_layers

__all__ = ["load_moe", "save_moe", "routers", "record_routing", "is_generic", "CPU_EXPERTS_IMPLEMENTATION"]

# benchmarks/moe_decode.py (N=4, SmolLM2-135M shapes, 1 CPU thread): eager beat grouped_mm at k=1 and
# batched_mm by 3-10x, and moesaic's few-token path (moe/fast_experts.py) beat eager at decode;
# transformers' default for Mixtral/Qwen3-VL-MoE is grouped_mm.
CPU_EXPERTS_IMPLEMENTATION = "moesaic_sparse"


def is_generic(folder: str | Path) -> bool:
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return False
    data = json.loads(cfg.read_text(encoding="utf-8"))
    return isinstance(data.get("moesaic"), dict) and data["moesaic"].get("kind") == "moesaic_generic_moe"


def load_moe(folder: str | Path, routing: str = "token") -> tuple[nn.Module, Any]:
    """(model, processor) of a merged MoE folder, whichever family it is.

    ``routing``: "token" (per token, as plain transformers routes), "sequence" (one expert choice per
    request and layer, pooled over the prompt) or "sequence_first" (the first layer's pooled choice for
    every layer): :mod:`moesaic.moe.sequence_routing`. A load-time option, never saved.
    """
    from moesaic.moe.generic import load_generic_moe
    from moesaic.moe.loading import load_dense, load_processor
    from moesaic.moe.sequence_routing import set_routing

    if is_generic(folder):
        model, processor = load_generic_moe(folder)
        set_routing(model, routing)
        return model, processor
    model = load_dense(str(folder))
    routers(model)  # raises when it is not an MoE
    if next(model.parameters()).device.type == "cpu" and hasattr(model, "set_experts_implementation"):
        from moesaic.moe.fast_experts import register

        model.set_experts_implementation(register())
    set_routing(model, routing)
    return model, load_processor(str(folder))


def prepare_if_moe(model: nn.Module, routing: str = "token") -> bool:
    """For a model loaded by other code (e.g. the HF backend): when it is an MoE, use the CPU decode path
    and install ``routing``; ``False`` (nothing done) when it is a dense model, which must use "token"."""
    from moesaic.moe.sequence_routing import set_routing

    try:
        routers(model)
    except MoesaicError:  # no decoder layers we know, or layers without routers: a dense model
        if routing != "token":
            raise ModelLoadError(f"routing={routing!r} needs a merged MoE, and {type(model).__name__} is dense",
                                 "leave routing at 'token' for dense models") from None
        return False
    if next(model.parameters()).device.type == "cpu" and hasattr(model, "set_experts_implementation"):
        from moesaic.moe.fast_experts import register

        model.set_experts_implementation(register())
    set_routing(model, routing)
    return True


def save_moe(model: nn.Module, processor: Any, folder: Path) -> None:
    """Write a (possibly updated) MoE into ``folder`` in the format it came in."""
    from moesaic.moe.generic import GenericOutput

    if isinstance(getattr(model.config, "moesaic", None), dict):  # type: ignore[union-attr]
        GenericOutput().save(model, processor, folder)
        return
    model.save_pretrained(folder)  # type: ignore[operator]
    if processor is not None:
        processor.save_pretrained(folder)


def routers(model: nn.Module) -> list[nn.Module]:
    """The router module of every sparse decoder layer, in layer order (raises when no layer has one).

    Layers that a merge left dense (Mllama's cross-attention layers) are skipped."""
    layers = find_decoder_layers(model)
    out = []
    for layer in layers.layers:
        gate = getattr(layer.mlp, "gate", None)
        if isinstance(gate, nn.Module) and isinstance(getattr(gate, "weight", None), torch.Tensor):
            out.append(gate)
    if not out:
        raise ModelLoadError(
            f"no decoder layer of {type(model).__name__} has an MoE router (mlp.gate)",
            "pass a model written by `moesaic merge`",
        )
    return out


@contextmanager
def record_routing(model: nn.Module) -> Iterator[list[list[tuple[torch.Tensor, torch.Tensor]]]]:
    """While active, ``calls[i]`` collects (router_logits (tokens, E), top-k indices (tokens, k)) of layer i."""
    gates = routers(model)
    calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in gates]

    def hook(i: int) -> Any:
        def _post(_module: nn.Module, _args: Any, output: Any) -> None:
            calls[i].append((output[0], output[2]))

        return _post

    handles = [g.register_forward_hook(hook(i)) for i, g in enumerate(gates)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
