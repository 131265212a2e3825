"""Read timeouts uvicorn does not have: a connection must finish its request headers within ``header_timeout_s``.

uvicorn closes idle keep-alive connections, but a connection that sends half a request line, or headers one
byte at a time, stays open as long as the client likes (measured: 75 s and counting), each one a socket and a
parser. :func:`header_timeout_protocol` returns uvicorn's h11 protocol with one more timer: armed when the
connection opens and after every response, disarmed when a request's headers are complete, and when it fires
while no request is in progress the connection is closed. Bodies have their own deadline, in
:class:`moesaic.serve.middleware.GuardMiddleware` (408 after ``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["header_timeout_protocol", "uvicorn_options"]

log = logging.getLogger(__name__)


def header_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's ``H11Protocol`` that closes connections whose request headers take over ``header_timeout_s``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self._in_request() and not self.transport.is_closing():
                log.info("closing a connection whose request headers took over %gs", header_timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # noqa: ANN401 - uvicorn's signature
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._in_request():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self._in_request():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_options(header_timeout_s: float) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply the header timeout."""
    return {"http": header_timeout_protocol(header_timeout_s)}
