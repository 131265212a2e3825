"""Dynamic batching: concurrent requests grouped into one ``generate_batch`` call.

One worker task owns the model (a single executor thread, since models are not thread-safe). The first
waiting request waits at most ``wait_s`` for company (only while other requests are still being
prepared, when the service reports that), then every waiting request with the same generation
parameters (up to ``max_batch_size``) joins its batch. Seeded sampling runs alone so that its output does
not depend on its neighbours. Streams hold the model while they run and give it back as soon as their
client goes away. The queue is bounded: a full queue raises :class:`~moesaic.errors.OverloadedError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from moesaic.backends.base import Answer, Backend, GenerationParams, StreamChunk
from moesaic.errors import OverloadedError, RequestTimeoutError
from moesaic.inputs.messages import Turn

__all__ = ["Batcher", "Job"]

log = logging.getLogger(__name__)
_END = object()


@dataclass(eq=False)
class Job:
    prompt: list[Turn]
    params: GenerationParams
    future: "asyncio.Future[Answer] | None" = None
    chunks: "asyncio.Queue[object] | None" = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def streaming(self) -> bool:
        return self.chunks is not None

    @property
    def batchable(self) -> bool:
        return not self.streaming and (self.params.greedy or self.params.seed is None)

    def dropped(self) -> bool:
        return self.cancelled.is_set() or (self.future is not None and self.future.done())


class Batcher:
    """Queue + worker in front of a backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch_size: int = 8,
        wait_s: float = 0.01,
        queue_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        incoming: Callable[[], int] | None = None,
    ) -> None:
        self.backend = backend
        self.max_batch_size = max_batch_size if backend.can_batch else 1
        self.wait_s = wait_s
        self.queue_size = queue_size
        self._on_batch = on_batch or (lambda n: None)
        self._on_depth = on_depth or (lambda n: None)
        self._incoming = incoming  # requests still being prepared (decoding images); None: unknown
        self._pending: collections.deque[Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moesaic-model")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # generate calls made by the worker (a batch of n counts once)

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="moesaic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in self._pending:
            job.cancelled.set()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _enqueue(self, job: Job) -> None:
        if len(self._pending) >= self.queue_size:
            raise OverloadedError(
                f"the server is busy: {len(self._pending)} requests are already waiting",
                "retry after a short pause (see the Retry-After header) or raise --queue-size",
            )
        self._pending.append(job)
        self._on_depth(len(self._pending))
        self._wakeup.set()

    async def submit(self, prompt: list[Turn], params: GenerationParams, timeout_s: float) -> Answer:
        """Queue one conversation and wait for its answer (at most ``timeout_s``)."""
        job = Job(prompt, params, future=asyncio.get_running_loop().create_future())
        self._enqueue(job)
        try:
            return await asyncio.wait_for(job.future, timeout_s)  # type: ignore[arg-type]
        except TimeoutError:
            raise _timeout(timeout_s) from None
        finally:
            job.cancelled.set()

    def stream(self, prompt: list[Turn], params: GenerationParams, timeout_s: float) -> AsyncIterator[StreamChunk]:
        """Queue one streamed conversation now (so a full queue fails before any byte is sent); iterate
        the result for its chunks. Closing the iterator (client gone) frees the model at the next chunk."""
        job = Job(prompt, params, chunks=asyncio.Queue())
        self._enqueue(job)
        return self._consume(job, timeout_s)

    async def _consume(self, job: Job, timeout_s: float) -> AsyncIterator[StreamChunk]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                try:
                    item = await asyncio.wait_for(job.chunks.get(), max(deadline - loop.time(), 0.0))  # type: ignore[union-attr]
                except TimeoutError:
                    raise _timeout(timeout_s) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            job.cancelled.set()

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                if batch[0].streaming:
                    await self._run_stream(batch[0])
                else:
                    await self._run_batch(batch)
            except Exception:  # pragma: no cover - _run_* settle their futures; keep the worker alive
                log.exception("batch worker failed")

    async def _next_batch(self) -> list[Job]:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._pending.popleft()
        if first.dropped():
            return []
        if first.batchable and self.max_batch_size > 1 and self.wait_s > 0:
            await self._wait_for_company(first)
        batch = [first]
        if first.batchable:
            for job in list(self._pending):
                if len(batch) >= self.max_batch_size:
                    break
                if job.batchable and job.params == first.params:
                    self._pending.remove(job)
                    if not job.dropped():
                        batch.append(job)
        self._on_depth(len(self._pending))
        return batch

    async def _wait_for_company(self, first: Job) -> None:
        """Wait at most ``wait_s`` for more requests; with an ``incoming`` count, only while some are
        still being prepared, so a lone request on an idle server does not pay the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self._compatible_count(first) < self.max_batch_size - 1 and loop.time() < deadline:
            if self._incoming is not None and self._incoming() == 0:
                return
            await asyncio.sleep(min(0.002, max(deadline - loop.time(), 0.0)))

    def _compatible_count(self, first: Job) -> int:
        return sum(1 for j in self._pending if j.batchable and j.params == first.params)

    async def _run_batch(self, batch: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        prompts, params = [j.prompt for j in batch], batch[0].params
        self.batches += 1
        self._on_batch(len(batch))
        try:
            if len(batch) == 1:
                answers = [await loop.run_in_executor(self._executor, self.backend.generate, prompts[0], params)]
            else:
                answers = await loop.run_in_executor(self._executor, self.backend.generate_batch, prompts, params)
            if len(answers) != len(batch):
                raise RuntimeError(f"backend returned {len(answers)} answers for {len(batch)} prompts")
        except Exception as exc:  # settle every waiter; the service turns it into an HTTP error
            if len(batch) > 1:  # one poisoned request must not fail its neighbours: retry each alone
                log.warning("a batch of %d failed (%s); answering its requests one by one", len(batch), exc)
                for job in batch:
                    if not job.dropped():
                        await self._run_batch([job])
                return
            for job in batch:
                if not job.dropped():
                    job.future.set_exception(exc)  # type: ignore[union-attr]
            return
        for job, answer in zip(batch, answers, strict=True):
            if not job.dropped():
                job.future.set_result(answer)  # type: ignore[union-attr]

    async def _run_stream(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        self.batches += 1
        self._on_batch(1)
        await loop.run_in_executor(self._executor, self._pump, job, loop)

    def _pump(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on the model thread: feed chunks to the waiting coroutine until done or cancelled."""
        queue_put = job.chunks.put_nowait  # type: ignore[union-attr]

        def put(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone at shutdown
                loop.call_soon_threadsafe(queue_put, item)

        iterator = self.backend.stream(job.prompt, job.params)
        try:
            for chunk in iterator:
                if job.cancelled.is_set():
                    log.info("stream cancelled by its client; model freed")
                    break
                put(chunk)
        except Exception as exc:
            put(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            put(_END)


def _timeout(timeout_s: float) -> RequestTimeoutError:
    return RequestTimeoutError(
        f"the request took longer than {timeout_s:g} s",
        "ask for fewer max_tokens, send smaller images, or raise --request-timeout-s",
    )
