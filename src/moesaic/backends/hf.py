"""The generic transformers VLM backend: any image-text-to-text model with a chat template.

One ``generate()`` call per request or per batch (left padding); streaming through
``TextIteratorStreamer`` on a worker thread. Sampling with a seed runs under a forked RNG, so the same
seed gives the same answer and the global RNG is left alone. ``forward_calls`` counts generate calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams, StreamChunk
from moesaic.backends.hf_chat import (
    Decoded,
    decode_generated,
    encode_conversations,
    eos_ids,
    generation_kwargs,
    seeded,
)
from moesaic.errors import InputError, ModelLoadError
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

__all__ = ["HFBackend"]

# model types whose processors place the image tokens themselves: exactly one image per prompt
_ONE_IMAGE = ("blip-2", "instructblip")


class HFBackend(Backend):
    """A transformers VLM answering through its processor's chat template."""

    can_stream = True
    can_batch = True

    def __init__(
        self, model: "PreTrainedModel", processor: "ProcessorMixin", *, name: str, max_batch_size: int = 8
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.name = name
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.needs_image = getattr(model.config, "model_type", "") in _ONE_IMAGE
        self.max_images = 1 if self.needs_image else None
        self.forward_calls = 0
        self._lock = threading.Lock()
        self._ends = eos_ids(model, self.tokenizer)

    @classmethod
    def create(cls, model: str, options: BackendOptions) -> "HFBackend":
        """Load ``model`` (hub id or local folder) as the registry does."""
        from moesaic.backends.hf_load import load_vlm
        from moesaic.moe.routing import prepare_if_moe

        loaded, processor, _ = load_vlm(model, options)
        prepare_if_moe(loaded, options.routing)  # merged MoEs: CPU decode path, per-request routing if asked
        return cls(loaded, processor, name=model, max_batch_size=options.max_batch_size)

    @classmethod
    def from_objects(
        cls, model: "PreTrainedModel", processor: "ProcessorMixin", name: str = "model", max_batch_size: int = 8
    ) -> "HFBackend":
        """Wrap an already-built (model, processor) pair, e.g. a freshly merged model."""
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(
                f"the processor given for {name!r} has no chat template",
                "set processor.chat_template (or load the processor with the model's chat_template.jinja)",
            )
        return cls(model, processor, name=name, max_batch_size=max_batch_size)

    # --- generation -------------------------------------------------------------------------------
    def _check(self, prompt: list[Turn]) -> None:
        images = sum(len(t.images) for t in prompt)
        if self.max_images is not None and images > self.max_images:
            raise InputError(
                f"{self.name} takes at most {self.max_images} image(s) per prompt, got {images}",
                f"send {self.max_images} image(s) or fewer",
            )
        if self.needs_image and images == 0:
            raise InputError(f"{self.name} answers about an image and none was given", "attach one image")

    def _run_generate(
        self, batch: "BatchFeature", params: GenerationParams, streamer: Any = None, cancel: Any = None
    ) -> "torch.Tensor":
        """One ``model.generate`` call; returns only the new ids (batch, new).

        ``cancel`` (a ``threading.Event``) ends decoding at the next step once set (a client went away).
        """
        import torch

        kwargs = generation_kwargs(params, self.tokenizer)
        if streamer is not None:
            kwargs["streamer"] = streamer
        if cancel is not None:
            from transformers import StoppingCriteriaList

            from moesaic.backends.hf_stream import CancelCriteria

            kwargs["stopping_criteria"] = StoppingCriteriaList([CancelCriteria(cancel)])
        with self._lock, torch.inference_mode(), seeded(params.seed, self.device):
            self.forward_calls += 1
            out = self.model.generate(**batch, **kwargs)  # (batch, prompt + new)
        return out[:, batch["input_ids"].shape[1] :]

    def _answers(self, batch: "BatchFeature", new_ids: "torch.Tensor", params: GenerationParams) -> list[Answer]:
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()  # real (unpadded) prompt lengths
        answers = []
        for row, used in zip(new_ids, prompt_tokens, strict=True):
            decoded: Decoded = decode_generated(
                self.tokenizer, row, ends=self._ends, pad_id=self.tokenizer.pad_token_id,
                max_new_tokens=params.max_new_tokens, stop=params.stop,
            )
            answers.append(Answer(
                text=decoded.text.strip(), model=self.name, prompt_tokens=int(used),
                completion_tokens=decoded.completion_tokens, finish_reason=decoded.finish_reason,
                details={"token_ids": list(decoded.token_ids)},
            ))
        return answers

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        return self.generate_batch([prompt], params)[0]

    def generate_batch(self, prompts: list[list[Turn]], params: GenerationParams | None = None) -> list[Answer]:
        """Answer several conversations with ONE ``generate`` call per ``max_batch_size`` chunk."""
        params = params or GenerationParams()
        for prompt in prompts:
            self._check(prompt)
        answers: list[Answer] = []
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = prompts[start : start + self.max_batch_size]
            batch = encode_conversations(self.processor, chunk, self.device)
            answers.extend(self._answers(batch, self._run_generate(batch, params), params))
        return answers

    def stream(self, prompt: list[Turn], params: GenerationParams | None = None) -> Iterator[StreamChunk]:
        """Yield text deltas as tokens arrive (stop strings held back until they can be ruled out)."""
        from moesaic.backends.hf_stream import stream_generate

        params = params or GenerationParams()
        self._check(prompt)
        batch = encode_conversations(self.processor, [prompt], self.device)
        yield from stream_generate(self, batch, params)

    def logits(self, prompt: list[Turn]) -> "torch.Tensor":
        """Next-token logits after the generation prompt (vocab,) — for tests and gate diagnostics."""
        import torch

        batch = encode_conversations(self.processor, [prompt], self.device)
        with self._lock, torch.inference_mode():
            return self.model(**batch).logits[0, -1].float().cpu()  # (vocab,)

