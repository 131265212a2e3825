"""The serving logic behind the thin routes: limits, image decoding, batching, responses.

Prompt tokens are *approximated* before anything is decoded (:func:`approx_tokens`: ``ceil(UTF-8 bytes / 4)``
per text part, at least one per part and one per message; images are bounded separately by count and pixels);
the usage numbers in responses are the backend's own counts. Bodies are counted, parsed and validated in a
worker thread (:mod:`moesaic.serve.parsing`).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError

from moesaic.backends.base import Answer, Backend, GenerationParams, StreamChunk
from moesaic.errors import ConfigError, ImageError, InputError, MoesaicError, NotFoundError
from moesaic.inputs.messages import ChatMessage, QuestionRequest, Turn, image_refs
from moesaic.serve.batching import Batcher
from moesaic.serve.budget import MemoryBudget, PixelLease
from moesaic.serve.intake import FetchPool, ImageIntake
from moesaic.serve.metrics import ServeMetrics
from moesaic.serve.parsing import (
    BodyLimits,
    check_counts,
    json_object,
    parse_json_body,
    validated,
    validation_error,
)
from moesaic.serve.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    InternalError,
    InvocationResponse,
    MoesaicExtra,
    ResponseMessage,
    Usage,
    completion_id,
    error_payload,
    shown,
)
from moesaic.serve.settings import ServeConfig

__all__ = ["ChatService", "approx_tokens", "model_image_side", "validation_error"]

log = logging.getLogger(__name__)
_GENERATION_KEYS = ("max_tokens", "temperature", "top_p", "seed", "stop")
# Below this, sampling is greedy decoding in all but name, and logits / temperature overflow float32 to inf
# (from about 1e-38 on: the sampler then fails, a 500); such temperatures decode greedily.
MIN_TEMPERATURE = 1e-5
M = TypeVar("M", bound=BaseModel)


def approx_tokens(messages: list[ChatMessage]) -> int:
    """Documented approximation of prompt tokens: per message one token (its role) plus, per content part, at
    least one token, a text part ceil(UTF-8 bytes / 4). Empty messages and parts count too."""
    total = 0
    for message in messages:
        total += 1
        for part in message.parts():
            text = getattr(part, "text", None)
            total += max(1, math.ceil(len(text.encode("utf-8")) / 4)) if text is not None else 1
    return total


def model_image_side(backend: Backend) -> int | None:
    """The largest side (px) the backend's image processor resizes to, read from its ``size``,
    ``max_image_size`` and ``crop_size`` (dicts or transformers' ``SizeDict``); ``None`` when unknown.

    The image policy decodes JPEGs at least twice that large at a reduced scale (both sides stay ≥ it), so the
    processor still downsamples. Taking the largest value errs towards decoding more, never less: Qwen-style
    processors that give pixel counts under the same keys yield a huge side, which simply turns this off.
    """
    if isinstance(side := getattr(backend, "image_side", None), int):  # the gateway's upstream backend
        return side
    images = getattr(getattr(backend, "processor", None), "image_processor", None)
    sides: list[int] = []
    for key in ("size", "max_image_size", "crop_size"):
        spec = getattr(images, key, None)
        for name in ("longest_edge", "shortest_edge", "height", "width"):
            value = spec.get(name) if isinstance(spec, dict) else getattr(spec, name, None)
            if isinstance(value, int) and value > 0:
                sides.append(value)
    return max(sides) if sides else None


class ChatService:
    """Owns the backend, the batcher, the image policy and the metrics of one app."""

    def __init__(self, backend: Backend, settings: ServeConfig, metrics: ServeMetrics) -> None:
        from moesaic.inputs.policy import ImagePolicy

        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        try:
            self.policy = ImagePolicy.for_server(  # never local files: requests come from strangers
                allow_private_hosts=list(settings.allow_host),
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
                max_side=settings.max_image_side,
                max_aspect_ratio=settings.max_image_aspect,
                timeout_s=settings.image_timeout_s,
                target_size=model_image_side(backend),  # big JPEGs decode at 1/2-1/8 scale, not in full
            )
        except ValidationError as exc:
            raise ConfigError(f"invalid --allow-host: {exc.errors()[0]['msg']}",
                              "give host names, addresses or CIDRs such as 10.0.0.0/8", param="allow_host") from None
        self.batcher = Batcher(
            backend,
            max_batch_size=settings.max_batch_size,
            wait_s=settings.batch_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            on_batch=metrics.observe_batch,
            on_depth=metrics.set_depth,
            incoming=lambda: self.preparing,
        )
        self.preparing = 0  # requests between arrival and the queue (decoding images)
        self.body_limits = BodyLimits(max_messages=settings.max_messages,
                                      max_content_parts=settings.max_content_parts,
                                      max_prompt_tokens=settings.max_prompt_tokens)
        self._parse_limiter = anyio.CapacityLimiter(2)  # big bodies parse two at a time, never 40 at once
        self.memory = MemoryBudget.for_machine(settings.max_rss_mib, settings.max_pixels_in_flight,
                                               settings.max_image_pixels, settings.budget_wait_s)
        self.fetcher = FetchPool(settings.fetch_workers, settings.fetch_per_client)
        self.intake = ImageIntake(self.policy, self.fetcher, settings.decode_workers)
        self.ready = False

    async def start(self) -> None:
        await self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self.fetcher.close()
        self.backend.close()

    # ----- preparation: limits first, then parsing and decoding off the event loop -----
    async def parse(self, raw: bytes, model: type[M]) -> M:
        """A JSON body as ``model``: counted, parsed and validated in a worker thread (400s name the field).
        Refused with 503 first while the server is over its memory ceiling."""
        self.memory.admit()
        return await anyio.to_thread.run_sync(parse_json_body, raw, model, self.body_limits,
                                              limiter=self._parse_limiter)

    def params_for(self, max_tokens: int | None, temperature: float, top_p: float,
                   seed: int | None, stop: list[str] | None) -> GenerationParams:
        limit = self.settings.max_tokens_limit
        if max_tokens is not None and not 1 <= max_tokens <= limit:
            raise InputError(f"max_tokens must be between 1 and {limit}, got {max_tokens}",
                             f"ask for at most {limit} tokens", param="max_tokens")
        if stop is not None and len(stop) > 4:
            raise InputError(f"at most 4 stop strings are accepted, got {len(stop)}", "send fewer", param="stop")
        return GenerationParams(max_new_tokens=max_tokens or self.settings.effective_default_max_tokens,
                                temperature=0.0 if temperature < MIN_TEMPERATURE else temperature, top_p=top_p,
                                seed=seed, stop=tuple(stop or ()))

    def max_images(self) -> int:
        cap = self.backend.max_images
        return self.settings.max_images if cap is None else min(cap, self.settings.max_images)

    async def decode(self, messages: list[ChatMessage], lease: PixelLease, client: str = "-") -> list[Turn]:
        """The messages with their images decoded; the images' pixels are held by ``lease``."""
        n_tokens = approx_tokens(messages)
        if n_tokens > self.settings.max_prompt_tokens:
            raise InputError(
                f"the prompt is too long: about {n_tokens} tokens, the limit is {self.settings.max_prompt_tokens}",
                "shorten the messages (tokens are estimated as UTF-8 bytes / 4)", param="messages")
        n_images = len(image_refs(messages))
        if n_images and not self.backend.supports_images:
            raise InputError(f"model {self.model_name!r} does not accept images", "send text only", param="messages")
        self.preparing += 1
        try:
            return await self.intake.turns(messages, lease, client, self.max_images())
        except (MoesaicError, ImportError, MemoryError):
            raise  # ours to explain, or a server fault (500), not the client's image
        except Exception as exc:  # a decoder crashed on the client's bytes: their image, our 400
            log.warning("image decoding failed", exc_info=exc)
            raise ImageError("an image in the request could not be decoded",
                             "send a valid JPEG, PNG, WebP or GIF (URL, data URL or base64)") from None
        finally:
            self.preparing -= 1  # the caller queues the request before it next awaits

    async def prepare_chat(self, req: ChatCompletionRequest, lease: PixelLease,
                           client: str = "-") -> tuple[list[Turn], GenerationParams]:
        if req.model != self.model_name:
            raise NotFoundError(f"model {shown(req.model)!r} is not served here",
                                f"use model {self.model_name!r} (see GET /v1/models)", param="model")
        params = self.params_for(req.requested_max_tokens(), req.temperature, req.top_p, req.seed, req.stop)
        return await self.decode(req.messages, lease, client), params

    # ----- answering -----
    async def answer(self, turns: list[Turn], params: GenerationParams) -> Answer:
        try:
            answer = await self.batcher.submit(turns, params, self.settings.request_timeout_s)
        except MoesaicError:
            raise
        except Exception as exc:
            raise _internal(exc) from None
        self.metrics.observe_tokens(answer.prompt_tokens, answer.completion_tokens)
        return answer

    async def complete(self, req: ChatCompletionRequest, client: str = "-") -> ChatCompletion:
        lease = self.memory.lease()
        try:
            turns, params = await self.prepare_chat(req, lease, client)
            answer = await self.answer(turns, params)
        finally:
            lease.close()
        return ChatCompletion(
            model=self.model_name,
            choices=[Choice(message=ResponseMessage(content=answer.text), finish_reason=answer.finish_reason)],
            usage=_usage(answer),
            moesaic=MoesaicExtra(experts=answer.experts),
        )

    async def open_stream(self, req: ChatCompletionRequest, client: str = "-") -> AsyncIterator[str]:
        """Decode and queue the stream now (errors and a full queue are 4xx/503s before any byte is sent);
        iterate the result for SSE lines. The images' pixels are held until the stream ends."""
        lease = self.memory.lease()
        try:
            turns, params = await self.prepare_chat(req, lease, client)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = await self.start_chunks(turns, params)
        except BaseException:
            lease.close()
            raise
        return self._sse(chunks, include_usage, lease)

    async def start_chunks(self, turns: list[Turn], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        """Queue the generation (a full queue is a 503 before any byte is sent); the gateway's override sends
        the request to the engine and awaits its status first."""
        return self.batcher.stream(turns, params, self.settings.request_timeout_s)

    async def health(self) -> tuple[int, dict[str, Any]]:
        """Status code and body of ``/health`` (``/ping`` uses the code)."""
        body = {"status": "ok" if self.ready else "loading", "model": self.model_name,
                "queue_depth": self.batcher.depth, "batches": self.batcher.batches,
                "memory": self.memory.snapshot()}
        return (200 if self.ready else 503), body

    async def _sse(self, chunks: AsyncIterator[StreamChunk], include_usage: bool,
                   lease: PixelLease) -> AsyncIterator[str]:
        """``chat.completion.chunk`` events, the last with moesaic's experts, then ``data: [DONE]``."""
        cid, created = completion_id(), int(time.time())

        def event(delta: Delta, finish: str | None = None, **extra: Any) -> str:
            choices = [] if extra.get("usage") is not None else [ChunkChoice(delta=delta, finish_reason=finish)]
            body = ChatCompletionChunk(id=cid, created=created, model=self.model_name, choices=choices, **extra)
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        yield event(Delta(role="assistant", content=""))
        try:
            async for piece in chunks:
                if piece.answer is not None:
                    answer = piece.answer
                    self.metrics.observe_tokens(answer.prompt_tokens, answer.completion_tokens)
                    yield event(Delta(), answer.finish_reason, moesaic=MoesaicExtra(experts=answer.experts))
                    if include_usage:
                        yield event(Delta(), usage=_usage(answer))
                elif piece.text:
                    yield event(Delta(content=piece.text))
        except Exception as exc:
            err = exc if isinstance(exc, MoesaicError) else _internal(exc)
            self.metrics.observe_error(err.code)
            yield f"data: {json.dumps(error_payload(err))}\n\n"
        finally:
            lease.close()
            await chunks.aclose()  # type: ignore[attr-defined]
        yield "data: [DONE]\n\n"

    async def invoke(self, body: bytes, content_type: str, question: str | None,
                     client: str = "-") -> InvocationResponse:
        """SageMaker ``/invocations``: ``{"question","image"}``, a chat body, or raw image bytes."""
        self.memory.admit()
        lease = self.memory.lease()
        try:
            return await self._invoke(body, content_type, question, client, lease)
        finally:
            lease.close()

    async def _invoke(self, body: bytes, content_type: str, question: str | None, client: str,
                      lease: PixelLease) -> InvocationResponse:
        req = await anyio.to_thread.run_sync(self._invocation_request, body, content_type, question,
                                             limiter=self._parse_limiter)
        if isinstance(req, ChatCompletionRequest):
            turns, params = await self.prepare_chat(req, lease, client)
        else:
            chat = req[0]
            params = self.params_for(chat.requested_max_tokens(), chat.temperature, chat.top_p, chat.seed, chat.stop)
            turns = await self.decode(chat.messages, lease, client)
        answer = await self.answer(turns, params)
        return InvocationResponse(answer=answer.text, model=self.model_name, experts=answer.experts,
                                  usage=_usage(answer), finish_reason=answer.finish_reason)


    def _invocation_request(self, body: bytes, content_type: str,
                            question: str | None) -> ChatCompletionRequest | tuple[ChatCompletionRequest]:
        """The /invocations body as a chat request (worker thread); a 1-tuple for the plain question form."""
        if content_type.startswith("image/"):
            ref = base64.b64encode(body).decode("ascii")
            data: dict[str, Any] = {"question": question or "What is in this image?", "image": ref}
        else:
            data = json_object(body, self.body_limits, 'send {"question": ..., "image": ...}')
        if "messages" in data:
            data.setdefault("model", self.model_name)
            check_counts(data, self.body_limits)
            return validated(ChatCompletionRequest, data)
        gen = {k: data.pop(k) for k in _GENERATION_KEYS if k in data}
        try:
            plain = QuestionRequest.model_validate(data)
            return (ChatCompletionRequest.model_validate({"model": self.model_name, "messages": [], **gen} |
                                                         {"messages": plain.to_messages()}),)
        except ValidationError as exc:
            raise validation_error(exc) from None


def _usage(answer: Answer) -> Usage:
    return Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                 total_tokens=answer.prompt_tokens + answer.completion_tokens)


def _internal(exc: Exception) -> InternalError:
    log.error("backend failed: %s", exc, exc_info=exc)
    return InternalError("the model failed to answer this request", "retry; if it keeps failing, read the server log")
