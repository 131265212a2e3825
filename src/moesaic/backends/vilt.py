"""ViLT: visual question answering as classification over a fixed answer vocabulary.

The answer is the arg-max label of ``config.id2label``; ``details`` carries the top labels with their
probabilities (VQA heads are trained with a sigmoid per answer, so scores are sigmoids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moesaic.backends.base import Answer, GenerationParams
from moesaic.backends.single_image import SingleImageBackend, question_and_image
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ViltBackend"]


class ViltBackend(SingleImageBackend):
    """Answers one question about one image with a label; batches in one forward pass."""

    can_batch = True
    top_k = 5
    model_class = "ViltForQuestionAnswering"

    def scores(self, prompts: list[list[Turn]]) -> "torch.Tensor":
        """Answer logits for each conversation (batch, num_labels), one forward pass."""
        import torch

        pairs = [question_and_image(p, "ViLT") for p in prompts]
        max_len = int(self.model.config.max_position_embeddings)
        batch = self.processor(
            images=[image for _, image in pairs], text=[q or "?" for q, _ in pairs], return_tensors="pt",
            padding=True, truncation=True, max_length=max_len,
        ).to(self.device)
        with self._lock, torch.inference_mode():
            self.forward_calls += 1
            return self.model(**batch).logits.float().cpu()  # (batch, num_labels)

    def _answer(self, logits: "torch.Tensor", prompt_tokens: int) -> Answer:
        import torch

        labels: dict[Any, str] = self.model.config.id2label
        probs = torch.sigmoid(logits)  # (num_labels,)
        top = torch.topk(probs, k=min(self.top_k, probs.numel()))
        ranked = [{"label": labels[int(i)], "score": round(float(p), 6)} for p, i in zip(top.values, top.indices)]
        return Answer(
            text=labels[int(logits.argmax())], model=self.name, prompt_tokens=prompt_tokens, completion_tokens=1,
            details={"top": ranked},
        )

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        return self.generate_batch([prompt], params)[0]

    def generate_batch(self, prompts: list[list[Turn]], params: GenerationParams | None = None) -> list[Answer]:
        logits = self.scores(prompts)
        tokenizer = self.processor.tokenizer
        lengths = [len(tokenizer(question_and_image(p, "ViLT")[0]).input_ids) for p in prompts]
        return [self._answer(row, n) for row, n in zip(logits, lengths, strict=True)]
