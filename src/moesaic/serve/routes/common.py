"""Helpers shared by the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel

from moesaic.serve.service import ChatService

__all__ = ["service_of", "client_of", "parse_body", "until_disconnect", "ClientGone"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def service_of(request: Request) -> ChatService:
    return request.app.state.service  # type: ignore[no-any-return]


def client_of(request: Request) -> str:
    """The client's address: the key of per-client fairness for image fetches."""
    return request.client.host if request.client else "-"


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body against ``model`` off the event loop; errors are 400s naming the field."""
    return await service_of(request).parse(await request.body(), model)


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its queued work was dropped."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it so that a queued request is
    dropped before it reaches the model, and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            log.info("client went away; its request was dropped")
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
