"""Images of a request → decoded turns, under the server's budgets: :class:`ImageIntake`.

Two pools with different jobs, so one cannot starve the other:

- image URLs are fetched in :class:`FetchPool`: a fixed number of threads, at most ``per_client`` fetches at
  once per client address (40 slow URLs from one client occupy ``per_client`` threads, not all of them), and
  every fetch is cancelled with its request — when a sibling image fails or the client leaves, its sockets are
  shut down and the request waits for the thread to return, so no fetch outlives the request that started it;
- decoding (data URLs, base64, fetched bytes) runs in worker threads bounded by a capacity limiter, each
  request's pixels (read from the image headers) reserved at once against the
  :class:`~moesaic.serve.budget.PixelBudget` before any is decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import anyio

from moesaic.errors import InputError
from moesaic.inputs.decode import declared_pixels, decode_image
from moesaic.inputs.fetch import FetchCancel, fetch_image_bytes
from moesaic.inputs.images import load_image_bytes
from moesaic.inputs.messages import ChatMessage, Turn, image_refs, resolve_messages
from moesaic.inputs.policy import ImagePolicy

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.serve.budget import PixelLease

__all__ = ["FetchPool", "ImageIntake", "is_http_url"]

log = logging.getLogger(__name__)
_CANCEL_GRACE_S = 5.0  # a cancelled fetch returns as soon as its socket is shut down; this is a safety net


def is_http_url(ref: str) -> bool:
    return ref.lstrip()[:8].lower().startswith(("http://", "https://"))


class FetchPool:
    """Bounded image-URL fetching with per-client fairness and cancellation."""

    def __init__(self, workers: int = 16, per_client: int = 4) -> None:
        self.workers = workers
        self.per_client = max(1, min(per_client, workers))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="moesaic-fetch")
        self._slots: asyncio.Semaphore | None = None
        self._clients: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self.running = 0

    def _client_slot(self, client: str) -> asyncio.Semaphore:
        sem, users = self._clients.get(client, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_client)
        self._clients[client] = (sem, users + 1)
        return sem

    def _client_done(self, client: str) -> None:
        sem, users = self._clients[client]
        if users <= 1:
            del self._clients[client]
        else:
            self._clients[client] = (sem, users - 1)

    async def fetch(self, url: str, policy: ImagePolicy, client: str) -> bytes:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        mine = self._client_slot(client)
        try:
            async with mine, self._slots:
                return await self._run(url, policy)
        finally:
            self._client_done(client)

    async def _run(self, url: str, policy: ImagePolicy) -> bytes:
        cancel = FetchCancel()
        future = asyncio.get_running_loop().run_in_executor(self._executor, fetch_image_bytes, url, policy, cancel)
        self.running += 1
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.cancel()  # shut its sockets: the thread returns now, not at the fetch deadline
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), _CANCEL_GRACE_S)
            raise
        finally:
            self.running -= 1

    async def fetch_all(self, urls: list[str], policy: ImagePolicy, client: str) -> dict[str, bytes]:
        """Every URL's bytes; on the first failure the other fetches are cancelled (and waited for), and the
        error of the first failing URL in request order is raised."""
        tasks = [asyncio.ensure_future(self.fetch(url, policy, client)) for url in urls]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
            await asyncio.gather(*tasks, return_exceptions=True)  # their threads have returned
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return {url: task.result() for url, task in zip(urls, tasks, strict=True)}

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ImageIntake:
    """Fetch, then decode, the images of one request under the server's policy and budgets."""

    def __init__(self, policy: ImagePolicy, fetcher: FetchPool, decode_workers: int) -> None:
        self.policy = policy
        self.fetcher = fetcher
        self._decode_limiter = anyio.CapacityLimiter(decode_workers)

    async def turns(self, messages: list[ChatMessage], lease: "PixelLease", client: str,
                    max_images: int | None) -> list[Turn]:
        refs = image_refs(messages)
        if max_images is not None and len(refs) > max_images:  # before anything is fetched
            raise InputError(f"{len(refs)} images given but at most {max_images} are accepted",
                             f"send {max_images} image(s) or fewer per request", param="messages")
        policy = self.policy
        urls = list(dict.fromkeys(r for r in refs if is_http_url(r)))
        local = [r for r in refs if not is_http_url(r)]

        def inline_bytes() -> dict[str, bytes]:  # data URLs and base64 first: a bad one fails before any fetch
            data = {ref: load_image_bytes(ref, policy) for ref in local}
            for ref in local:
                declared_pixels(data[ref], policy)
            return data

        data = await anyio.to_thread.run_sync(inline_bytes, limiter=self._decode_limiter) if local else {}
        if urls:
            data |= await self.fetcher.fetch_all(urls, policy, client)

        def work() -> list[Turn]:
            # All headers first, then one reservation for the whole request: a request never waits for
            # budget while holding some (six requests of two images each deadlocked on a three-image budget).
            total = sum(declared_pixels(data[ref], policy) for ref in refs)
            lease.reserve(total)
            prepaid = _Prepaid(lease, total)
            return resolve_messages(messages, policy, max_images=max_images,
                                    load=lambda ref: decode_image(data[ref], policy, prepaid))

        return await anyio.to_thread.run_sync(work, limiter=self._decode_limiter)


class _Prepaid:
    """A reserver that draws on pixels already reserved for the request, and on the lease beyond them."""

    def __init__(self, lease: "PixelLease", pixels: int) -> None:
        self._lease = lease
        self._left = pixels
        self._lock = threading.Lock()

    def reserve(self, pixels: int) -> None:
        with self._lock:
            covered = min(pixels, self._left)
            self._left -= covered
        if pixels > covered:
            self._lease.reserve(pixels - covered)

    def release(self, pixels: int) -> None:
        self._lease.release(pixels)
