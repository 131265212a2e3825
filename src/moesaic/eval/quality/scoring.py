"""Every model on every domain: exact-match accuracy of greedy answers (the accuracy matrix).

Answers are generated in left-padded batches (the tiny models' tokenizers pad on the left), which gives the
same greedy answers as one prompt at a time (checked by ``tests/eval/test_quality_study.py``) at a fraction
of the cost. ``forced_routing`` is the study's oracle: every token of every layer goes to one expert, so an
MoE evaluated under it must reproduce that expert exactly when the merge is lossless.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moesaic.finetune.data import Sample, load_samples
from moesaic.finetune.encode import process
from moesaic.finetune.evaluate import accuracy

__all__ = ["load_test_set", "load_any", "batch_answers", "model_accuracy", "forced_routing", "retention",
           "pooled_choices"]


def load_test_set(path: Path) -> list[Sample]:
    """Rows of a domain's JSONL with their images decoded (what generation needs)."""
    from PIL import Image

    samples = load_samples(path)
    for s in samples:
        s.pil[:] = [Image.open(p).convert("RGB") for p in s.images]
    return samples


def load_any(folder: Path, routing: str = "token") -> tuple[Any, Any]:
    """(model, processor) of a dense VLM or a merged MoE folder (any MoE format), in eval mode.

    ``routing`` applies to MoEs: "token" (transformers' per-token routing) or "sequence" (one expert choice
    per prompt, :mod:`moesaic.moe.sequence_routing`)."""
    from moesaic.errors import ModelLoadError
    from moesaic.finetune.model import load_model, load_processor
    from moesaic.moe.routing import load_moe

    try:
        model, processor = load_moe(folder, routing=routing)
    except ModelLoadError:  # no router in its layers: the dense VLM it is
        model, processor = load_model(folder), load_processor(folder)
    model.eval()
    return model, processor


def batch_answers(model: Any, processor: Any, samples: list[Sample], max_new_tokens: int,
                  batch_size: int = 16) -> list[str]:
    """Greedy answers to ``samples`` (their prompt turns and decoded images), ``batch_size`` at a time."""
    import torch

    tok = processor.tokenizer
    if tok.padding_side != "left":
        batch_size = 1  # right padding would put pad tokens between the prompt and the answer
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        texts = [processor.apply_chat_template(s.prompt_messages(), add_generation_prompt=True, tokenize=False)
                 for s in chunk]
        inputs = {k: v.to(device) for k, v in process(processor, texts, [s.pil for s in chunk]).items()}
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]  # (batch, new_tokens)
        answers += [str(tok.decode(row, skip_special_tokens=True)).strip() for row in new]
    return answers


def pooled_choices(model: Any, processor: Any, samples: list[Sample], batch_size: int = 16) -> Any:
    """Top-1 expert of each prompt's pooled (per-request) choice per layer: (layers, rows) tensor.

    ``model`` must be loaded with a sequence routing mode; one prefill per batch, no generation.
    """
    import torch

    from moesaic.moe.routing import record_routing

    device = next(model.parameters()).device
    picks = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        texts = [processor.apply_chat_template(s.prompt_messages(), add_generation_prompt=True, tokenize=False)
                 for s in chunk]
        inputs = {k: v.to(device) for k, v in process(processor, texts, [s.pil for s in chunk]).items()}
        batch, seq = inputs["input_ids"].shape
        with record_routing(model) as calls, torch.no_grad():
            model(**inputs)
        # every token of a row carries the row's choice: read it at the last (never padded) position
        picks.append(torch.stack([layer[0][1].reshape(batch, seq, -1)[:, -1, 0] for layer in calls]))  # (L, b)
    return torch.cat(picks, dim=1)


@contextmanager
def forced_routing(model: Any, expert: int) -> Iterator[None]:
    """While active, every router of ``model`` sends every token to ``expert`` alone (weight 1)."""
    import torch

    from moesaic.moe.routing import routers

    def hook(_module: Any, _args: Any, output: Any) -> Any:
        logits, weights, index = output  # (tokens, E), (tokens, k), (tokens, k)
        tokens = index.shape[0]
        return (logits, torch.ones(tokens, 1, dtype=weights.dtype, device=weights.device),
                torch.full((tokens, 1), expert, dtype=index.dtype, device=index.device))

    handles = [g.register_forward_hook(hook) for g in routers(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def model_accuracy(model: Any, processor: Any, tests: dict[str, list[Sample]], max_new_tokens: int,
                   batch_size: int = 16) -> dict[str, float]:
    """Accuracy of ``model`` on each domain's test samples."""
    return {name: float(accuracy(batch_answers(model, processor, samples, max_new_tokens, batch_size), samples)
                        or 0.0) for name, samples in tests.items()}


def retention(merged: dict[str, float], experts: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Per domain d: merged accuracy on d ÷ expert d's accuracy on d (None when the expert scores 0)."""
    out: dict[str, float | None] = {}
    for domain, acc in merged.items():
        own = experts[domain][domain]
        out[domain] = acc / own if own > 0 else None
    return out
