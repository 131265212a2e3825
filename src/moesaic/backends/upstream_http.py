"""A small asyncio HTTP/1.1 client with keep-alive for the gateway's calls to its engine.

The gateway makes one upstream call per request, so the client's own CPU cost is most of what the gateway
adds; httpx's async stack cost several times what this does (BENCHMARKS.md, "Gateway overhead"). It speaks
just what OpenAI-compatible engines answer with: ``Content-Length`` or chunked bodies, keep-alive, server-sent
events read line by line. Closing a streamed response closes its connection, which is how an engine learns
that the client went away.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

__all__ = ["AsyncPool", "Response", "StreamResponse", "ConnectFailed", "ReadTimedOut", "ProtocolFailed"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 256 * 1024 * 1024


class ConnectFailed(OSError):
    """The engine could not be reached."""


class ReadTimedOut(TimeoutError):
    """The engine did not answer in time."""


class ProtocolFailed(OSError):
    """The engine's answer broke off or was not HTTP/1.1 as expected."""


class _Conn:
    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.reused = reader, writer, False

    def close(self) -> None:
        self.writer.close()


class Response:
    __slots__ = ("status", "headers", "content")

    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content


class StreamResponse:
    """An open response; iterate :meth:`lines`, then :meth:`aclose` (also when abandoning it)."""

    def __init__(self, pool: "AsyncPool", conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self._pool, self._conn, self.status, self.headers = pool, conn, status, headers
        self._done = False
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._left = int(headers.get("content-length", "-1"))

    async def _pieces(self) -> AsyncIterator[bytes]:
        reader, timeout = self._conn.reader, self._pool.read_timeout_s
        if self._chunked:
            while True:
                size = int((await _read(reader.readline(), timeout)).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await _read(reader.readline(), timeout)  # the empty line after the last chunk
                    self._done = True
                    return
                data = await _read(reader.readexactly(size + 2), timeout)
                yield data[:-2]
        elif self._left >= 0:
            while self._left > 0:
                data = await _read(reader.read(min(self._left, 65536)), timeout)
                if not data:
                    raise ProtocolFailed("the engine closed the connection mid-answer")
                self._left -= len(data)
                yield data
            self._done = True
        else:  # read until the engine closes the connection
            while data := await _read(reader.read(65536), timeout):
                yield data

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines (UTF-8, without line ends)."""
        pending = b""
        async for piece in self._pieces():
            pending += piece
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    async def aread(self) -> bytes:
        return b"".join([p async for p in self._pieces()])

    def close(self) -> None:
        """Give the connection back (kept alive only when the body was read to its end); idempotent."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            keep = self._done and self.headers.get("connection", "").lower() != "close"
            self._pool._release(conn, keep)

    async def aclose(self) -> None:
        self.close()


async def _read(awaitable: object, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(awaitable, timeout)  # type: ignore[arg-type]
    except TimeoutError:
        raise ReadTimedOut(f"no answer within {timeout:g} s") from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as exc:
        raise ProtocolFailed(f"the engine's answer broke off ({type(exc).__name__})") from None


class AsyncPool:
    """Keep-alive connections to one ``http(s)://host:port``; at most ``max_connections`` at once."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, max_connections: int = 64,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        netloc = self.host if parts.port is None else f"{self.host}:{self.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head_tail = f"host: {netloc}\r\nuser-agent: moesaic-gateway\r\n{extra}".encode("latin-1")
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self._idle: collections.deque[_Conn] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._ssl = ssl_module.create_default_context() if self.tls else None

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl, limit=_MAX_HEAD),
                self.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port} ({type(exc).__name__})") from None
        return _Conn(reader, writer)

    def _release(self, conn: _Conn, keep: bool) -> None:
        if keep:
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    async def _send(self, method: str, path: str, body: bytes | None) -> tuple[_Conn, int, dict[str, str]]:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head_tail
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        message = head + b"\r\n" + (body or b"")
        while True:
            conn = self._idle.popleft() if self._idle else await self._connect()
            try:
                conn.writer.write(message)
                line = await _read(conn.reader.readuntil(b"\r\n\r\n"), self.read_timeout_s)
            except (ProtocolFailed, ConnectionError, OSError):
                conn.close()
                if conn.reused:  # the engine closed an idle keep-alive connection: try a fresh one
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return conn, *_parse_head(line)

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        """A whole response (the connection goes back to the pool)."""
        stream = await self.stream(method, path, body)
        try:
            content = await stream.aread()
            if len(content) > _MAX_BODY:
                raise ProtocolFailed("the engine's answer is too large")
        finally:
            await stream.aclose()
        return Response(stream.status, stream.headers, content)

    async def stream(self, method: str, path: str, body: bytes | None = None) -> StreamResponse:
        await self._slots.acquire()
        try:
            conn, status, headers = await self._send(method, path, body)
        except BaseException:
            self._slots.release()
            raise
        return StreamResponse(self, conn, status, headers)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.popleft().close()


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    try:
        version, code = lines[0].split(" ", 2)[:2]
        status = int(code)
    except ValueError:
        raise ProtocolFailed(f"the engine did not answer HTTP ({lines[0][:60]!r})") from None
    if not version.startswith("HTTP/1."):
        raise ProtocolFailed(f"the engine answered {version}, not HTTP/1.x")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers
