"""Per-request ("sequence") routing for merged MoEs, a load-time option: one expert choice per sequence.

Plain transformers (and moesaic's default, ``token``) routes every token on its own. With ``sequence``
routing, for each sequence and layer the router logits are averaged over the prompt's real (non-padding)
tokens at prefill; softmax → top-k → renormalise of that mean picks the experts and their weights, and
every token of the sequence — prompt and generated ones (decode steps reuse the stored choice) — goes
through them. ``sequence_first`` pools only at the first MoE layer and sends the request to that expert
choice in every layer (moesaic merges keep expert j = source model j in every layer, so one choice picks
one fine-tune throughout). Saved models stay native: the mode lives only in the loaded model's hooks.

It works for every output family (Mixtral, Qwen3-VL-MoE, generic) because all of them call
``layer.mlp.gate`` on the flattened (batch·seq, H) states and pass its (logits, weights, indices) on to
``layer.mlp.experts``. Three hooks do it:

* a pre-hook on the text model (the decoder layers' parent) reads ``attention_mask`` (left-padded batches)
  and whether the cache is empty (prefill) or not (decode), through :mod:`moesaic.backends.cache_compat`
  (transformers 5.24 renamed ``past_key_values`` to ``cache``);
* a pre-hook on each MoE block records its input's (batch, seq);
* a hook on each router replaces its output by the sequence's pooled choice, broadcast to every token.

Greedy and sampled generation are supported; beam search (which reorders the cache) is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from moesaic.backends.cache_compat import check_cache_api, past_length
from moesaic.errors import ConfigError, MoesaicError
from moesaic.moe.layers import find_decoder_layers

__all__ = ["ROUTING_MODES", "RoutingMode", "SequenceRoutingError", "set_routing", "routing_mode", "get_routing"]

RoutingMode = Literal["token", "sequence", "sequence_first"]
ROUTING_MODES: tuple[str, ...] = ("token", "sequence", "sequence_first")
_ATTR = "_moesaic_routing"  # set on the model: the installed _Installed (absent means token routing)


class SequenceRoutingError(MoesaicError):
    """A decode step that cannot reuse the stored per-sequence choice."""


@dataclass
class _State:
    first_only: bool = False  # sequence_first: every layer reuses layer 0's pooled choice
    prefill: bool = True
    mask: torch.Tensor | None = None  # (batch, seq) 1 = real token, for the current call's new tokens
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # layer -> (batch, seq) of the block input
    choice: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # layer -> (w, idx) (B, k)


@dataclass
class _Installed:
    mode: str
    state: _State
    handles: list[Any]


def get_routing(model: nn.Module) -> str:
    """The routing mode installed on ``model`` ("token" when none was)."""
    installed = getattr(model, _ATTR, None)
    return installed.mode if isinstance(installed, _Installed) else "token"


def _text_model(model: nn.Module) -> nn.Module:
    """The module holding the decoder layers (it receives attention_mask and the KV cache)."""
    path = find_decoder_layers(model).path
    parent = path.rpartition(".")[0]
    return model.get_submodule(parent) if parent else model


def _on_text_model(state: _State) -> Any:
    def pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state.prefill = past_length(args, kwargs) == 0  # cache under any name, cache_position or mask length
        mask = kwargs.get("attention_mask")
        state.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None  # (batch, past + seq)
        state.shapes.clear()
        if state.prefill:
            state.choice.clear()

    return pre


def _on_block(state: _State, layer: int) -> Any:
    def pre(_module: nn.Module, args: tuple[Any, ...]) -> None:
        hidden = args[0]  # (batch, seq, H)
        state.shapes[layer] = (int(hidden.shape[0]), int(hidden.shape[1]))

    return pre


def _pooled_choice(logits: torch.Tensor, mask: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, S, E), mask (B, S) or None → renormalised top-k weights and indices, each (B, k)."""
    weights = torch.ones(logits.shape[:2], device=logits.device) if mask is None else mask.to(logits.device).float()
    total = weights.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    mean = (logits.float() * weights[..., None]).sum(dim=1) / total  # (B, E)
    top_w, top_i = torch.topk(torch.softmax(mean, dim=-1), k, dim=-1)  # (B, k)
    return top_w / top_w.sum(dim=-1, keepdim=True), top_i


def _on_router(state: _State, layer: int) -> Any:
    def post(_module: nn.Module, _args: Any, output: Any) -> Any:
        logits, weights, index = output  # (T, E), (T, k), (T, k) with T = batch·seq
        batch, seq = state.shapes.get(layer, (1, int(index.shape[0])))
        k = int(index.shape[1])
        if state.prefill and state.first_only and layer > 0:
            state.choice[layer] = state.choice[0]  # layer 0 ran first in this forward
        elif state.prefill:
            mask = None if state.mask is None else state.mask[:, -seq:]  # (B, S)
            state.choice[layer] = _pooled_choice(logits.reshape(batch, seq, -1), mask, k)
        elif layer not in state.choice or state.choice[layer][1].shape[0] != batch:
            raise SequenceRoutingError(
                f"layer {layer}: a decode step of batch {batch} has no stored per-sequence expert choice",
                "start generation with a prefill (empty cache) of the same batch; beam search is not supported",
            )
        top_w, top_i = state.choice[layer]  # (B, k)
        top_w = top_w[:, None, :].expand(batch, seq, k).reshape(-1, k).to(weights.dtype)  # (T, k)
        top_i = top_i[:, None, :].expand(batch, seq, k).reshape(-1, k).to(index.dtype)  # (T, k)
        return logits, top_w, top_i

    return post


def set_routing(model: nn.Module, mode: str) -> None:
    """Install ``mode``: "token" (transformers' per-token routing), "sequence" (one choice per sequence and
    layer) or "sequence_first" (one choice per sequence, taken at the first layer, for every layer)."""
    from moesaic.moe.routing import routers

    if mode not in ROUTING_MODES:
        raise ConfigError(f"unknown routing mode {mode!r}", f"use one of: {', '.join(ROUTING_MODES)}")
    gates = routers(model)  # raises when the model is not an MoE
    installed = getattr(model, _ATTR, None)
    if isinstance(installed, _Installed):
        for h in installed.handles:
            h.remove()
        delattr(model, _ATTR)
    if mode == "token":
        return
    check_cache_api()  # refuse a transformers whose cache cannot tell prefill from decode, never route silently
    state = _State(first_only=mode == "sequence_first")
    layers = find_decoder_layers(model).layers
    handles = [_text_model(model).register_forward_pre_hook(_on_text_model(state), with_kwargs=True)]
    for i, (layer, gate) in enumerate(zip(layers, gates, strict=True)):
        handles.append(layer.mlp.register_forward_pre_hook(_on_block(state, i)))
        handles.append(gate.register_forward_hook(_on_router(state, i)))
    object.__setattr__(model, _ATTR, _Installed(mode, state, handles))  # not an nn.Module attribute: never saved


@contextmanager
def routing_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """While active, ``model`` routes in ``mode``; the previous mode is restored afterwards."""
    before = get_routing(model)
    set_routing(model, mode)
    try:
        yield model
    finally:
        set_routing(model, before)
