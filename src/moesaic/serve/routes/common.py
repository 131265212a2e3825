"""Helpers shared by the routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from moesaic.errors import InputError
from moesaic.serve.service import ChatService, validation_error

__all__ = ["service_of", "parse_body", "until_disconnect", "ClientGone"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def service_of(request: Request) -> ChatService:
    return request.app.state.service  # type: ignore[no-any-return]


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body against ``model``; errors are 400s naming the field."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:  # bad JSON/UTF-8, >4300-digit ints, deep nesting
        raise InputError(f"the body is not valid JSON: {exc}", "send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object", "send a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


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
