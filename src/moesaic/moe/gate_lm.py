"""The ``lm`` gate-training step: next-token loss with only router weights trainable, plus an optional
Switch-Transformer load-balancing loss (Fedus et al. 2021): ``E · Σ_e f_e · P_e`` per layer, where
``f_e`` is the share of top-k selections going to expert e and ``P_e`` its mean router probability."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moesaic.moe.data import Sample, encode_sample
from moesaic.moe.routing import record_routing

__all__ = ["lm_step", "load_balancing_loss"]


def load_balancing_loss(logits: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
    """logits (tokens, E), top_i (tokens, k) → scalar; 1.0 when perfectly balanced."""
    num_experts = logits.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1)  # (tokens, E)
    f = torch.bincount(top_i.flatten(), minlength=num_experts).float() / top_i.numel()  # (E,)
    return num_experts * (f * probs.mean(dim=0)).sum()


def _answer_mask(processor: Any, sample: Sample, ids: torch.Tensor) -> torch.Tensor:
    """(seq,) bool: positions whose next token is trained on (the answer when there is one)."""
    mask = torch.ones(ids.shape[-1] - 1, dtype=torch.bool)
    if sample.answer:
        prompt_len = encode_sample(processor, sample, with_answer=False)["input_ids"].shape[-1]
        mask[: max(prompt_len - 1, 0)] = False
    return mask


def lm_step(model: nn.Module, processor: Any, samples: list[Sample], load_balance: float) -> torch.Tensor:
    """Accumulate gradients over ``samples`` (one forward each); return the mean loss."""
    total = torch.zeros(())
    for sample in samples:
        inputs = encode_sample(processor, sample)
        ids = inputs["input_ids"]  # (1, seq)
        with record_routing(model) as calls:
            logits = model(**inputs).logits  # (1, seq, vocab)
        mask = _answer_mask(processor, sample, ids)
        loss = F.cross_entropy(logits[0, :-1][mask].float(), ids[0, 1:][mask])
        if load_balance > 0:
            aux = torch.stack([load_balancing_loss(c[-1][0], c[-1][1]) for c in calls]).mean()
            loss = loss + load_balance * aux
        (loss / len(samples)).backward()
        total = total + loss.detach() / len(samples)
    return total
