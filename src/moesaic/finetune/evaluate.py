"""Held-out evaluation: mean answer loss and exact-match accuracy of greedy answers."""

from __future__ import annotations

from typing import Any

from moesaic.finetune.data import Sample
from moesaic.finetune.encode import Encoded, collate, process
from moesaic.progress import progress

__all__ = ["eval_loss", "generate_answer", "generate_answers", "exact_match", "accuracy", "prompt_inputs"]


def eval_loss(model: Any, processor: Any, items: list[tuple[Sample, Encoded]]) -> float | None:
    """Token-weighted mean loss on the assistant tokens of ``items``."""
    import torch

    if not items:
        return None
    total, count = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for item in items:
            batch = {k: v.to(device) for k, v in collate(processor, [item]).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(count, 1)


def prompt_inputs(processor: Any, messages: list[dict[str, Any]], images: list[Any]) -> Any:
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return process(processor, [text], [images])


def generate_answer(model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any],
                    max_new_tokens: int) -> str:
    import torch

    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, messages, images).items()}
    tok = processor.tokenizer
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]  # (new_tokens,)
    return str(tok.decode(new, skip_special_tokens=True)).strip()


def generate_answers(model: Any, processor: Any, samples: list[Sample], max_new_tokens: int) -> list[str]:
    model.eval()
    return [generate_answer(model, processor, s.prompt_messages(), s.pil, max_new_tokens)
            for s in progress(samples, desc="generating", unit="sample")]


def exact_match(pred: str, gold: str) -> bool:
    def norm(t: str) -> str:
        return " ".join(t.casefold().strip().rstrip(".").split())
    return norm(pred) == norm(gold)


def accuracy(preds: list[str], samples: list[Sample]) -> float | None:
    if not samples:
        return None
    return sum(exact_match(p, s.answer) for p, s in zip(preds, samples)) / len(samples)
