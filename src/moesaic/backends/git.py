"""GIT: image captioning; a question, when given, becomes the text prefix the caption continues.

The prompt is ``[CLS] question-tokens`` (no [SEP]: the model keeps writing after it) and decoding stops
at [SEP], as GIT was trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moesaic.backends.base import Answer, GenerationParams, apply_stop
from moesaic.backends.hf_chat import generation_kwargs, seeded
from moesaic.backends.single_image import SingleImageBackend, question_and_image
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

__all__ = ["GitBackend"]


class GitBackend(SingleImageBackend):
    """Captions one image, optionally continuing a question prefix."""

    model_class = "GitForCausalLM"

    def __init__(self, model: "PreTrainedModel", processor: "ProcessorMixin", *, name: str) -> None:
        super().__init__(model, processor, name=name)
        self.tokenizer = processor.tokenizer

    def encode(self, prompt: list[Turn]) -> dict[str, "torch.Tensor"]:
        """``pixel_values`` (1, 3, H, W) and ``input_ids`` (1, 1 + question tokens)."""
        import torch

        question, image = question_and_image(prompt, "GIT")
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        ids = [self.tokenizer.cls_token_id, *self.tokenizer(question, add_special_tokens=False).input_ids]
        return {"pixel_values": pixels.to(self.device), "input_ids": torch.tensor([ids], device=self.device)}

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        import torch

        params = params or GenerationParams()
        inputs = self.encode(prompt)
        kwargs = generation_kwargs(params, self.tokenizer)
        kwargs["eos_token_id"] = self.tokenizer.sep_token_id
        with self._lock, torch.inference_mode(), seeded(params.seed, self.device):
            self.forward_calls += 1
            out = self.model.generate(**inputs, **kwargs)  # (1, prompt + new)
        prompt_len = inputs["input_ids"].shape[1]
        new = [int(i) for i in out[0, prompt_len:].tolist()]
        ended = self.tokenizer.sep_token_id in new
        count = new.index(self.tokenizer.sep_token_id) + 1 if ended else len(new)
        text, cut = apply_stop(self.tokenizer.decode(new[:count], skip_special_tokens=True), params.stop)
        finish = "stop" if ended or cut or count < params.max_new_tokens else "length"
        return Answer(
            text=text.strip(), model=self.name, prompt_tokens=prompt_len, completion_tokens=count,
            finish_reason=finish, details={"token_ids": new[:count]},
        )
