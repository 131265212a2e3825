"""The backend protocol: how a model answers.

A backend takes decoded turns (:class:`~moesaic.inputs.messages.Turn`) and generation parameters and
returns an :class:`Answer`. Abilities are attributes (``supports_images``, ``max_images``,
``can_stream``, ``can_batch``) so callers (the server's batcher, the CLI) adapt without type checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moesaic.inputs.messages import Turn

__all__ = ["GenerationParams", "Answer", "StreamChunk", "Backend", "BackendOptions"]


MIN_SAMPLING_TEMPERATURE = 1e-5


class GenerationParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(128, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        """Temperatures below ``MIN_SAMPLING_TEMPERATURE`` decode greedily: logits / such a temperature
        overflow to inf (from about 1e-38) and the sampler fails, while above it they already pick the top."""
        return self.temperature < MIN_SAMPLING_TEMPERATURE


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"
    experts: list[str] = Field(default_factory=list, description="which experts answered")
    details: dict[str, Any] = Field(default_factory=dict)


class StreamChunk(BaseModel):
    """A text delta; the last chunk of a stream carries the full :class:`Answer`."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    answer: Answer | None = None


class BackendOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    max_batch_size: int = Field(8, ge=1)
    routing: Literal["token", "sequence", "sequence_first"] = Field(
        "token", description="merged MoEs: per-token routing, or one expert choice per request (moe.sequence_routing)")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="transformers models: load linear layers with bitsandbytes (backends.quantization)")


def apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return (text, whether it was cut)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Backend(ABC):
    """Base class of every backend. Subclasses set ``name`` and implement :meth:`generate`."""

    name: str = "backend"
    supports_images: bool = True
    max_images: int | None = None
    can_stream: bool = False
    can_batch: bool = False

    @abstractmethod
    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        """Answer one conversation."""

    def generate_batch(self, prompts: list[list[Turn]], params: GenerationParams | None = None) -> list[Answer]:
        """Answer several conversations; backends with ``can_batch`` do it in one forward pass per step."""
        return [self.generate(p, params) for p in prompts]

    def stream(self, prompt: list[Turn], params: GenerationParams | None = None) -> Iterator[StreamChunk]:
        """Yield text deltas, then a final chunk holding the :class:`Answer`. Default: one delta."""
        answer = self.generate(prompt, params)
        yield StreamChunk(text=answer.text)
        yield StreamChunk(answer=answer)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, files)."""
