"""Tokenising samples with the model's own processor; labels only on assistant tokens.

Spans: for each assistant turn the chat template is rendered up to the generation prompt and up to the end
of that turn; the processor's token counts of those prefixes bound the answer tokens. The prefixes must
tokenise to a prefix of the full sample (true for chat templates, whose turns end in special tokens); if a
template breaks that, the row is rejected rather than mislabelled. Everything else (system/user text,
image tokens, padding) gets label -100. Nothing is ever truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moesaic.finetune.data import DataError, Sample

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Encoded", "encode_sample", "collate", "process", "IGNORE_INDEX"]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    n_tokens: int
    n_image_tokens: int
    spans: tuple[tuple[int, int], ...]  # [start, end) token ranges of assistant answers


def _n_images(messages: list[dict[str, Any]]) -> int:
    return sum(p["type"] == "image" for m in messages for p in m["content"])


def process(processor: Any, texts: list[str], images: list[list[Any]]) -> Any:
    """The processor on a batch of rendered texts; ``images`` per sample (may be empty lists)."""
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
    if any(images):
        kwargs["images"] = images if all(images) else [img for imgs in images for img in imgs]
    return processor(**kwargs)


def _render(processor: Any, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def encode_sample(processor: Any, sample: Sample, image_token: int) -> Encoded:
    """Token counts and assistant spans of ``sample`` with its (already resized) images."""
    msgs = sample.messages
    full_text = _render(processor, msgs)
    full_ids = process(processor, [full_text], [sample.pil])["input_ids"][0]  # (seq,)
    spans = []
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        start_text = _render(processor, msgs[:i], generation_prompt=True)
        end_text = _render(processor, msgs[: i + 1])
        if not (full_text.startswith(end_text) and end_text.startswith(start_text)):
            raise DataError(f"row {sample.row}: the chat template does not render turns as prefixes",
                            "use a model whose chat template appends turns (all transformers VLM templates do)")
        k = _n_images(msgs[:i])
        start = process(processor, [start_text], [sample.pil[:k]])["input_ids"][0]
        end = len(full_ids) if i == len(msgs) - 1 else \
            len(process(processor, [end_text], [sample.pil[:k]])["input_ids"][0])
        if not bool((full_ids[: len(start)] == start).all()):
            raise DataError(f"row {sample.row}: the answer's tokens merge with the prompt's",
                            "end prompts with the template's generation prompt; check the chat template")
        spans.append((len(start), end))
    n_image = int((full_ids == image_token).sum())
    return Encoded(n_tokens=len(full_ids), n_image_tokens=n_image, spans=tuple(spans))


def collate(processor: Any, batch: list[tuple[Sample, Encoded]]) -> dict[str, "torch.Tensor"]:
    """Right-padded model inputs plus ``labels`` (-100 outside assistant spans)."""
    import torch

    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        texts = [_render(processor, s.messages) for s, _ in batch]
        inputs = process(processor, texts, [s.pil for s, _ in batch])
    finally:
        tokenizer.padding_side = side
    ids = inputs["input_ids"]  # (batch, seq)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (sample, enc) in enumerate(batch):
        if int(inputs["attention_mask"][row].sum()) != enc.n_tokens:
            raise DataError(f"row {sample.row}: tokenisation changed between passes", "report this as a bug")
        for start, end in enc.spans:
            labels[row, start:end] = ids[row, start:end]
    inputs["labels"] = labels
    return dict(inputs)
