"""``moesaic ask IMAGE "QUESTION"``: answer a question about an image.

Locally with the offline starter experts (``--model starter``, the default) or any model the backend
registry can load (a hub id or a local folder), or remotely with ``--endpoint http://host:port`` (chat
completions, or SageMaker ``--route invocations``). ``--audio question.wav`` asks the question by voice
(transcribed first); ``--speak answer.wav`` also writes the answer as speech.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from moesaic.config import CommandConfig

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["AskConfig", "AskResult", "ask"]

DEFAULT_QUESTION = "What is in this image?"


class AskConfig(CommandConfig):
    """Options of ``moesaic ask``."""

    positional: ClassVar[tuple[str, ...]] = ("image", "question")

    image: str | None = Field(None, description="image path, http(s) URL, data URL or base64")
    question: str = Field(DEFAULT_QUESTION, description="the question to answer")
    model: str = Field(
        "starter", description="'starter' (offline experts; 'starter:llm' adds the SmolLM2 writer), a hub id or a folder"
    )
    backend: str | None = Field(None, description="force a backend by name (see the backend registry)")
    max_tokens: int = Field(128, ge=1, le=8192, description="longest answer, in tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    routing: Literal["token", "sequence", "sequence_first"] = Field(
        "token", description="merged MoEs: route per token, or one expert choice per request")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="transformers models: load the linear layers in 4 or 8 bits (bitsandbytes)")
    endpoint: str | None = Field(None, description="ask a running server instead, e.g. http://localhost:8080")
    api_key: str | None = Field(None, description="bearer token for --endpoint")
    route: Literal["chat", "invocations"] = Field("chat", description="endpoint API: chat completions or SageMaker")
    stream: bool = Field(False, description="print the answer as it is generated")
    audio: str | None = Field(None, description="audio file whose speech is the question")
    speak: str | None = Field(None, description="write the answer as speech to this .wav file")
    language: str = Field("en", description="language of the spoken answer")


class AskResult(BaseModel):
    answer: str
    model: str
    experts: list[str] = Field(default_factory=list)
    latency_s: float
    question: str | None = None
    finish_reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    transcript: str | None = None
    speech_path: str | None = None

    def render(self) -> str:
        return self.answer


_BACKENDS: dict[tuple[str, str | None, str, str, str, str], "Backend"] = {}
_BACKENDS_LOCK = threading.Lock()


def _backend(config: AskConfig) -> "Backend":
    """Load (once per process) the backend for ``config.model``."""
    from moesaic.backends.base import BackendOptions
    from moesaic.backends.registry import load_backend

    key = (config.model, config.backend, config.dtype, config.device, config.routing, config.quantization)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            options = BackendOptions(dtype=config.dtype, device=config.device, routing=config.routing,
                                     quantization=config.quantization)
            _BACKENDS[key] = load_backend(config.model, options, backend=config.backend)
        return _BACKENDS[key]


def _load_image(ref: str) -> "Image.Image":
    """Decode ``ref`` under the command line's policy (local files allowed, public URLs only)."""
    from moesaic.inputs.images import load_image
    from moesaic.inputs.policy import ImagePolicy

    return load_image(ref, ImagePolicy.for_cli())


def _ask_local(config: AskConfig, question: str, on_delta: Callable[[str], None] | None = None) -> AskResult:
    from moesaic.backends.base import GenerationParams
    from moesaic.inputs.messages import Turn

    started = time.perf_counter()
    parts: list[Any] = [_load_image(config.image)] if config.image else []
    parts.append(question)
    backend = _backend(config)
    params = GenerationParams(
        max_new_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p, seed=config.seed
    )
    prompt = [Turn(role="user", parts=tuple(parts))]
    if config.stream and on_delta is not None:
        answer = None
        for chunk in backend.stream(prompt, params):
            if chunk.text:
                on_delta(chunk.text)
            answer = chunk.answer or answer
        assert answer is not None, "Backend.stream ends with a chunk holding the Answer"
    else:
        answer = backend.generate(prompt, params)
    return AskResult(
        answer=answer.text,
        model=answer.model,
        experts=list(answer.experts),
        latency_s=round(time.perf_counter() - started, 3),
        question=question,
        finish_reason=answer.finish_reason,
        details=answer.details,
    )


def ask(config: AskConfig, on_delta: Callable[[str], None] | None = None) -> AskResult:
    """Answer a question about an image (local model or --endpoint).

    With ``config.stream``, ``on_delta`` receives each piece of the answer as it is generated.
    """
    started = time.perf_counter()
    question, transcript = config.question, None
    if config.audio:
        from moesaic.tasks.speech import transcribe

        transcript = transcribe(config.audio)
        question = transcript.strip() or config.question
    if config.endpoint:
        from moesaic.serve.client import ask_endpoint

        result = ask_endpoint(config.model_copy(update={"question": question}), on_delta)
        result = result.model_copy(update={"question": question})
    else:
        result = _ask_local(config, question, on_delta)
    speech_path = None
    if config.speak:
        from moesaic.tasks.speech import speak

        speech_path = str(Path(speak(result.answer, config.speak, config.language)))
    return result.model_copy(
        update={"transcript": transcript, "speech_path": speech_path,
                "latency_s": round(time.perf_counter() - started, 3)}
    )
