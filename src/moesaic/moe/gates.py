"""Gate (router) weights, computed in one place.

``hidden`` / ``hidden_avg`` follow mergekit-moe: per layer, an expert's gate row is the normalised
hidden state of its positive prompts (last token for ``hidden``; mean over the sequence for
``hidden_avg``) minus that of its negative prompts. moesaic reads the hidden state *entering each
layer's MLP* (the post-attention-layernorm output, captured with forward pre-hooks), since that is
exactly what the router multiplies. ``random`` draws small Gaussian rows (to be trained); ``uniform``
gives zero logits (equal weights). A warning is logged when two experts' rows are nearly parallel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moesaic.moe.config import ExpertSpec, GateMode
from moesaic.moe.layers import find_decoder_layers
from moesaic.moe.prompts import encode, image_list, render_prompt
from moesaic.progress import progress

__all__ = ["compute_gates", "float32_parameters", "mlp_inputs", "capture_mlp_inputs", "prompt_samples", "warn_degenerate", "degenerate_pairs"]

log = logging.getLogger(__name__)


@contextmanager
def capture_mlp_inputs(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """While active, ``captured[i]`` holds the last (batch, seq, hidden) input of layer i's MLP."""
    layers = find_decoder_layers(model)
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i: int) -> Any:
        def _pre(_module: nn.Module, args: tuple[Any, ...]) -> None:
            captured[i] = args[0].detach()

        return _pre

    handles = [mlp.register_forward_pre_hook(hook(i)) for i, mlp in enumerate(layers.mlps())]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@contextmanager
def float32_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """While active, a half/bfloat16 model's parameters are float32 (buffers untouched); restored after.

    bf16 matrix products are several times slower than fp32 on CPUs without bf16 units, and the round
    trip bf16 → fp32 → bf16 is exact, so gate prompts run in fp32 without changing the model."""
    params = [p for p in model.parameters() if p.dtype in (torch.bfloat16, torch.float16)]
    dtypes = [p.dtype for p in params]
    for p in params:
        p.data = p.data.float()
    try:
        yield model
    finally:
        for p, dtype in zip(params, dtypes, strict=True):
            p.data = p.data.to(dtype)


def prompt_samples(processor: Any, prompts: list[str], images: list[str]) -> list[dict[str, torch.Tensor]]:
    """Model inputs for each prompt (paired with images, cycling the shorter list)."""
    pics = image_list(images)
    n = max(len(prompts), len(pics))
    out = []
    for i in range(n):
        text = prompts[i % len(prompts)] if prompts else ""
        imgs = [pics[i % len(pics)]] if pics else []
        out.append(encode(processor, render_prompt(processor, text, len(imgs)), imgs))
    return out


@torch.no_grad()
def mlp_inputs(model: nn.Module, samples: list[dict[str, torch.Tensor]], average: bool, desc: str) -> torch.Tensor:
    """Mean over samples of each layer's MLP input: last token, or mean over tokens. → (layers, hidden)."""
    total: torch.Tensor | None = None
    with capture_mlp_inputs(model) as captured:
        for inputs in progress(samples, desc=desc, unit="prompt"):
            model(**inputs)
            ran = [h for h in captured if h is not None]
            assert ran, "no decoder layer ran"
            per_layer = []
            for h in captured:  # None: a layer that skipped (Mllama's cross-attention layers without an image)
                vec = torch.zeros(ran[0].shape[-1]) if h is None else \
                    h[0].float().mean(dim=0) if average else h[0, -1].float()  # (hidden,)
                per_layer.append(vec)
            captured[:] = [None] * len(captured)
            stacked = torch.stack(per_layer)  # (layers, hidden)
            total = stacked if total is None else total + stacked
    assert total is not None
    return total / len(samples)


def compute_gates(
    model: nn.Module | None,
    processor: Any,
    experts: list[ExpertSpec],
    mode: GateMode,
    num_layers: int,
    hidden: int,
    seed: int = 0,
    degenerate_threshold: float = 0.95,
) -> list[torch.Tensor]:
    """One (num_experts, hidden) gate weight per layer."""
    n = len(experts)
    if mode == "uniform":
        return [torch.zeros(n, hidden) for _ in range(num_layers)]
    if mode == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(n, hidden, generator=gen) * hidden**-0.5 for _ in range(num_layers)]
    assert model is not None
    with float32_parameters(model):
        gates = _prompt_gates(model, processor, experts, mode, num_layers)
    warn_degenerate(gates, [e.label for e in experts], degenerate_threshold)
    return gates


def _prompt_gates(model: nn.Module, processor: Any, experts: list[ExpertSpec], mode: GateMode,
                  num_layers: int) -> list[torch.Tensor]:
    rows = []  # per expert: (layers, hidden)
    for spec in experts:
        pos = mlp_inputs(model, prompt_samples(processor, spec.positive_prompts, spec.positive_images),
                         mode == "hidden_avg", f"gate prompts: {spec.label}")
        vec = F.normalize(pos, dim=-1)
        if spec.negative_prompts:
            neg = mlp_inputs(model, prompt_samples(processor, spec.negative_prompts, []),
                             mode == "hidden_avg", f"negative prompts: {spec.label}")
            vec = F.normalize(vec - F.normalize(neg, dim=-1), dim=-1)
        rows.append(vec)
    return [torch.stack([r[i] for r in rows]) for i in range(num_layers)]  # (E, H) per layer


def degenerate_pairs(gates: list[torch.Tensor], labels: list[str], threshold: float = 0.95) -> list[tuple[int, str, str]]:
    """(layer, expert a, expert b) wherever two experts' gate rows have cosine above ``threshold``."""
    found = []
    for layer, g in enumerate(gates):
        unit = F.normalize(g.float(), dim=-1)
        cos = unit @ unit.T  # (E, E)
        for a in range(len(labels)):
            for b in range(a + 1, len(labels)):
                if cos[a, b] > threshold:
                    found.append((layer, labels[a], labels[b]))
    return found


def warn_degenerate(gates: list[torch.Tensor], labels: list[str], threshold: float = 0.95) -> list[tuple[int, str, str]]:
    """Log a warning naming the experts whose gate rows are nearly parallel; return the pairs."""
    found = degenerate_pairs(gates, labels, threshold)
    if found:
        pairs = sorted({(a, b) for _, a, b in found})
        log.warning(
            "degenerate gates: experts %s have nearly parallel gate vectors (cosine > %.2f) in %d of %d layers; "
            "their prompts do not separate them — give more distinct positive_prompts or negative_prompts",
            ", ".join(f"{a}/{b}" for a, b in pairs), threshold, len({l for l, _, _ in found}), len(gates),
        )
    return found
