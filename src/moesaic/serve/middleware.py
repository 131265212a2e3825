"""ASGI middleware: cross-site requests, API key, body size (by Content-Length and while reading) and request
metrics.

The body is read here, bounded, before any route sees it, so an oversized upload is refused with 413
without buffering more than ``max_body_bytes``.

The server sends no CORS headers, so no page from another origin may use it. Browsers still deliver a
cross-site "simple" POST (``text/plain`` or form content types skip the CORS preflight) and the routes
parse any body as JSON, so without an API key a web page a user visits could make a local server run the
model. Such requests carry an ``Origin`` header naming another site: they are refused with 403. Clients
outside browsers (SDKs, curl, SageMaker) send no ``Origin`` and are unaffected.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from moesaic.errors import AuthError, MoesaicError
from moesaic.serve.metrics import ServeMetrics
from moesaic.serve.protocol import BodyTimeoutError, CrossOriginError, PayloadTooLargeError, error_payload

__all__ = ["GuardMiddleware", "OPEN_PATHS", "KNOWN_ROUTES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/ping", "/health", "/", "/favicon.ico")  # no API key needed (the page holds no data)
KNOWN_ROUTES = ("/v1/chat/completions", "/v1/models", "/invocations", "/ping", "/health", "/metrics", "/")


async def send_error(send: Send, exc: MoesaicError, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_payload(exc)).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, metrics: ServeMetrics,
                 body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.api_key = api_key
        self.api_key_bytes = api_key.encode("utf-8") if api_key is not None else None
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"
        started, status = time.perf_counter(), [500]

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            error = _cross_origin_error(scope) or self._auth_error(scope, path)
            if error is None:
                body_or_error = await self._read_body(scope, receive)
                error = body_or_error if isinstance(body_or_error, MoesaicError) else None
            if error is not None:
                self.metrics.observe_error(error.code)
                headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthError) else None
                await send_error(timed_send, error, headers)
                return
            await self.app(scope, _replay(body_or_error, receive), timed_send)  # type: ignore[arg-type]
        finally:
            self.metrics.observe_request(route, status[0], time.perf_counter() - started)

    def _auth_error(self, scope: Scope, path: str) -> AuthError | None:
        if self.api_key is None or path in OPEN_PATHS:
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")  # raw bytes: a UTF-8 key arrives as its UTF-8 bytes
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key_bytes or b""):
            return None
        what = "no API key was given" if not given else "the API key is not valid"
        return AuthError(what, "send the header 'Authorization: Bearer <key>' with the server's --api-key")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | MoesaicError:
        try:
            return await asyncio.wait_for(self._read_capped(scope, receive), self.body_timeout_s)
        except asyncio.TimeoutError:
            return BodyTimeoutError(f"the request body did not arrive within {self.body_timeout_s:g}s",
                                    "send the whole body at once, or raise --body-timeout-s")

    async def _read_capped(self, scope: Scope, receive: Receive) -> bytes | MoesaicError:
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _too_large(int(declared), limit)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                return _too_large(total, limit, partial=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _cross_origin_error(scope: Scope) -> CrossOriginError | None:
    """A POST (or other non-GET) whose ``Origin`` is not this server's own host (``Host``, or the
    ``X-Forwarded-Host`` a proxy sets; a cross-site simple request cannot add that header)."""
    if scope.get("method", "GET") in ("GET", "HEAD", "OPTIONS"):
        return None
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1")
    netloc = urlsplit(text).netloc.lower()
    own = {headers.get(name, b"").decode("latin-1").lower() for name in (b"host", b"x-forwarded-host")}
    if netloc and netloc in own:
        return None
    return CrossOriginError(f"cross-origin request from {text[:100]!r} refused",
                            "call the API from a program (it sends no Origin header) or from the page this "
                            "server serves at /")


def _too_large(size: int, limit: int, partial: bool = False) -> PayloadTooLargeError:
    what = f"more than {size}" if partial else f"{size}"
    return PayloadTooLargeError(
        f"the request body is {what} bytes; the limit is {limit}",
        "send smaller or fewer images (or image URLs), or raise --max-body-bytes",
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = [False]

    async def replay() -> Message:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the client to disconnect

    return replay
