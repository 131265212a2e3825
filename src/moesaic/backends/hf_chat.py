"""Turns → chat-template messages → model inputs, and generated ids → answers, for transformers VLMs.

Several conversations are encoded in one call with left padding (decoder-only generation appends on the
right, so every row's prompt must end at the same column).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from moesaic.backends.base import GenerationParams, apply_stop
from moesaic.errors import InputError
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import BatchFeature, ProcessorMixin

__all__ = [
    "turns_to_messages",
    "encode_conversations",
    "Decoded",
    "decode_generated",
    "eos_ids",
    "generation_kwargs",
    "seeded",
]


def turns_to_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """moesaic turns (str and PIL parts interleaved) → the chat-template message format."""
    if not turns:
        raise InputError("the conversation is empty", "send at least one user message")
    messages = []
    for turn in turns:
        content: list[dict[str, Any]] = []
        for part in turn.parts:
            if isinstance(part, str):
                if part:
                    content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image", "image": part.convert("RGB")})
        messages.append({"role": turn.role, "content": content})
    return messages


def encode_conversations(
    processor: "ProcessorMixin", conversations: list[list[Turn]], device: "torch.device | str"
) -> "BatchFeature":
    """Apply the processor's chat template to each conversation and batch them, left-padded."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    messages = [turns_to_messages(turns) for turns in conversations]
    batch = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left"},
    )
    return batch.to(device)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends an answer: the generation config's eos ids and the tokenizer's eos."""
    found: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        found.add(eos)
    elif eos:
        found.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        found.add(int(tokenizer.eos_token_id))
    return found


@dataclass(frozen=True)
class Decoded:
    text: str
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    token_ids: tuple[int, ...] = ()


def decode_generated(
    tokenizer: Any, new_ids: "torch.Tensor", *, ends: set[int], pad_id: int | None, max_new_tokens: int,
    stop: tuple[str, ...],
) -> Decoded:
    """One row of newly generated ids (new,) → text cut at eos / stop strings, token count, finish reason."""
    ids = [int(i) for i in new_ids.tolist()]
    count, ended = len(ids), False
    for i, tok in enumerate(ids):
        if tok in ends:
            count, ended = i + 1, True
            break
    # after an early finish generate pads the row; padding is not part of the answer
    while not ended and count > 0 and pad_id is not None and ids[count - 1] == pad_id and pad_id not in ends:
        count -= 1
    text = tokenizer.decode(ids[:count], skip_special_tokens=True)
    text, cut = apply_stop(text, stop)
    stopped = ended or cut or count < max_new_tokens
    reason: Literal["stop", "length"] = "stop" if stopped else "length"
    return Decoded(text=text, completion_tokens=count, finish_reason=reason, token_ids=tuple(ids[:count]))


def generation_kwargs(params: GenerationParams, tokenizer: Any) -> dict[str, Any]:
    """``generate()`` keyword arguments for ``params``: greedy or sampled, stop strings, padding id."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy}
    if params.greedy:  # neutralise sampling defaults a checkpoint's generation_config may carry
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    stops = [s for s in params.stop if s]
    if stops:
        kwargs.update(stop_strings=stops, tokenizer=tokenizer)
    if tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    return kwargs


@contextmanager
def seeded(seed: int | None, device: "torch.device") -> Iterator[None]:
    """Run under a forked RNG seeded with ``seed`` (when given): reproducible, global RNG untouched."""
    import torch

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
