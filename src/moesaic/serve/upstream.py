"""The gateway: moesaic's routes, limits and image policy in front of an OpenAI-compatible engine.

``moesaic serve --upstream http://127.0.0.1:8000/v1 --model NAME`` keeps every route of the built-in server
(OpenAI, SageMaker ``/ping`` + ``/invocations``, playground, ``/health``, ``/metrics``). Requests are checked
and their images fetched and decoded here, exactly as the built-in server does; the engine receives PNG data
URLs of the images shrunk to the model's input side. Requests are forwarded concurrently (the engine does
its own batching), at most ``--queue-size`` at once (503 beyond). ``/health`` and ``/ping`` ask the engine's
``/health`` (falling back to ``/v1/models``) and answer 503 with the reason when it is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from moesaic.backends.base import Answer, Backend, GenerationParams, StreamChunk
from moesaic.backends.upstream import UpstreamBackend, UpstreamConfig, folder_image_side
from moesaic.errors import MoesaicError, OverloadedError, RequestTimeoutError
from moesaic.inputs.messages import ChatMessage, Turn, image_refs, resolve_messages
from moesaic.serve.metrics import ServeMetrics
from moesaic.serve.budget import PixelLease
from moesaic.serve.service import ChatService, approx_tokens
from moesaic.serve.settings import ServeConfig

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.backends.upstream_http import StreamResponse

__all__ = ["UpstreamService", "service_for", "upstream_backend"]

log = logging.getLogger(__name__)
HEALTH_TTL_S = 1.0  # /ping may be called often: one upstream probe per second at most
HEALTH_TIMEOUT_S = 2.0


def upstream_backend(settings: ServeConfig, url: str | None = None, api_key: str | None = None) -> UpstreamBackend:
    """The backend for ``settings.upstream`` (or ``url``): the image side comes from ``--image-side``, else
    from ``--model`` when it is a local folder."""
    side = settings.image_side or folder_image_side(settings.model)
    if side is None:
        log.warning("no image side known for %s: images go upstream at their decoded size (set --image-side)",
                    settings.model)
    return UpstreamBackend(UpstreamConfig(
        url=url or settings.upstream or "", model=settings.model, image_side=side,
        api_key=api_key or settings.resolved_upstream_api_key(), timeout_s=settings.request_timeout_s,
        max_connections=settings.queue_size))


def service_for(backend: Backend, settings: ServeConfig, metrics: ServeMetrics) -> ChatService:
    """The service that owns ``backend``: the gateway for an upstream engine, else the batching service."""
    if isinstance(backend, UpstreamBackend):
        return UpstreamService(backend, settings, metrics)
    return ChatService(backend, settings, metrics)


def _once(fn: Callable[[], object]) -> Callable[[], None]:
    called = False

    def run() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return run


class UpstreamService(ChatService):
    """:class:`ChatService` whose answers come from the engine instead of the batcher."""

    backend: UpstreamBackend

    def __init__(self, backend: UpstreamBackend, settings: ServeConfig, metrics: ServeMetrics) -> None:
        super().__init__(backend, settings, metrics)
        self.in_flight = 0
        self.forwarded = 0  # requests sent to the engine
        self._health: tuple[float, dict[str, Any]] | None = None

    async def start(self) -> None:
        self.backend.pool()
        log.info("fronting the engine at %s (model %r)", self.backend.config.url, self.backend.config.model)
        self.ready = True
        probe = await self.upstream_health()
        if probe["status"] != "ok":
            log.warning("the engine is not healthy yet: %s", probe.get("error"))

    async def stop(self) -> None:
        self.ready = False
        await self.backend.aclose()
        await super().stop()

    # ----- admission and bodies -----
    def _admit(self) -> None:
        if self.in_flight >= self.settings.queue_size:
            raise OverloadedError(f"the server is busy: {self.in_flight} requests are with the model engine",
                                  "retry after a short pause (see the Retry-After header) or raise --queue-size")
        self.in_flight += 1
        self.forwarded += 1
        self.metrics.set_depth(self.in_flight)

    def _release(self) -> None:
        self.in_flight -= 1
        self.metrics.set_depth(self.in_flight)

    async def _body(self, turns: list[Turn], params: GenerationParams, stream: bool) -> dict[str, Any]:
        if any(t.images for t in turns):  # shrinking + PNG encoding: off the event loop
            return await anyio.to_thread.run_sync(self.backend.body, turns, params, stream)
        return self.backend.body(turns, params, stream)

    def _timeout(self) -> RequestTimeoutError:
        return RequestTimeoutError(f"the request took longer than {self.settings.request_timeout_s:g} s",
                                   "ask for fewer max_tokens, or raise --request-timeout-s")

    async def decode(self, messages: list[ChatMessage], lease: PixelLease, client: str = "-") -> list[Turn]:
        """Text-only requests skip the decoding thread (a thread hop costs more than the work here)."""
        if image_refs(messages):
            return await super().decode(messages, lease, client)
        n_tokens = approx_tokens(messages)
        if n_tokens > self.settings.max_prompt_tokens:
            return await super().decode(messages, lease, client)  # raises the limit's error
        return resolve_messages(messages, self.policy, max_images=self.max_images())

    # ----- answering -----
    async def answer(self, turns: list[Turn], params: GenerationParams) -> Answer:
        self._admit()
        try:
            body = await self._body(turns, params, stream=False)
            self.metrics.observe_batch(1)
            answer = await asyncio.wait_for(self.backend.acomplete(body), self.settings.request_timeout_s)
        except TimeoutError:
            raise self._timeout() from None
        except MoesaicError as exc:
            self._note_failure(exc)
            raise
        finally:
            self._release()
        self.metrics.observe_tokens(answer.prompt_tokens, answer.completion_tokens)
        return answer

    async def start_chunks(self, turns: list[Turn], params: GenerationParams) -> AsyncIterator[StreamChunk]:
        """Send the request upstream and wait for its status, so an engine error is an HTTP error (not an
        event inside a 200 stream); then iterate for the engine's chunks."""
        self._admit()
        try:
            body = await self._body(turns, params, stream=True)
            self.metrics.observe_batch(1)
            response = await asyncio.wait_for(self.backend.astream(body), self.settings.request_timeout_s)
        except TimeoutError:
            self._release()
            raise self._timeout() from None
        except BaseException as exc:
            self._release()
            if isinstance(exc, MoesaicError):
                self._note_failure(exc)
            raise
        done = _once(lambda: (response.close(), self._release()))
        chunks = self._relay(response, done)
        weakref.finalize(chunks, done)  # a stream never iterated (client gone before the first byte)
        return chunks

    async def _relay(self, response: "StreamResponse", done: Callable[[], None]) -> AsyncIterator[StreamChunk]:
        """The engine's chunks until its answer ends, the deadline passes or our client goes away; closing
        this (the client disconnected) closes the upstream connection, which cancels the engine's work."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        chunks = self.backend.achunks(response)
        try:
            async for chunk in chunks:
                if time.monotonic() > deadline:
                    raise self._timeout()
                yield chunk
        finally:
            done()  # synchronous: runs even while this task is being cancelled
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    # ----- health -----
    def _note_failure(self, exc: MoesaicError) -> None:
        if exc.code == "upstream_unavailable":
            self._health = None  # the next /ping asks again rather than trusting an old "ok"

    async def upstream_health(self) -> dict[str, Any]:
        """``{"status": "ok"|"down", "url", "error"?}`` from the engine's ``/health`` (or ``/v1/models``),
        cached for :data:`HEALTH_TTL_S`."""
        now = time.monotonic()
        if self._health is not None and now - self._health[0] < HEALTH_TTL_S:
            return self._health[1]
        result = await self._probe()
        self._health = (time.monotonic(), result)
        return result

    async def _probe(self) -> dict[str, Any]:
        error = await self.backend.ahealth(HEALTH_TIMEOUT_S)  # the engine's address stays out: /health is open
        return {"status": "ok"} if error is None else {"status": "down", "error": error}

    async def health(self) -> tuple[int, dict[str, Any]]:
        upstream = await self.upstream_health() if self.ready else {"status": "down", "error": "not started"}
        ok = self.ready and upstream["status"] == "ok"
        body = {"status": "ok" if ok else ("upstream_down" if self.ready else "loading"), "model": self.model_name,
                "upstream": upstream, "in_flight": self.in_flight, "forwarded": self.forwarded,
                "memory": self.memory.snapshot()}
        return (200 if ok else 503), body
