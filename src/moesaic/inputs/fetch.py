"""Fetch an image over http(s) safely: checked addresses, pinned connections, caps on time and size.

For every hop (the first URL and each redirect) the host is resolved once, every address is checked
(:func:`moesaic.inputs.addresses.checked_addresses`), and the connection goes to one of *those* addresses:
:class:`PinnedBackend` replaces httpcore's TCP connect, so the URL — and with it the ``Host`` header, TLS SNI
and certificate check — keeps the host name while DNS rebinding cannot swap the address. One deadline covers
the whole fetch (DNS, connect, TLS, every read, every redirect): the socket-level stream wrapper shortens each
read's timeout to what is left, so a server dribbling one byte at a time cannot hold a worker past it.
A :class:`FetchCancel` passed along ends a fetch early from another thread: its sockets are shut down, so a
blocked read returns at once and the worker is free (the server cancels the fetches of a request that failed
or whose client left).
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpcore
import httpx

from moesaic.errors import FetchError, ImageError, URLPolicyError
from moesaic.inputs.addresses import IPAddress, checked_addresses
from moesaic.inputs.policy import ImagePolicy

__all__ = ["fetch_image_bytes", "FetchCancel", "PinnedBackend", "PinnedTransport", "ALLOWED_CONTENT_TYPES",
           "USER_AGENT"]

log = logging.getLogger(__name__)

USER_AGENT = "moesaic-image-fetch/0.1"
ALLOWED_CONTENT_TYPES = ("application/octet-stream", "binary/octet-stream")
_REDIRECTS = {301, 302, 303, 307, 308}
_USERINFO = re.compile(r"//[^/?#@]*@")


class FetchCancel:
    """Cancels fetches from another thread: :meth:`cancel` shuts down every socket they opened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.cancelled = False

    def register(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self.cancelled:
                raise httpcore.ConnectError("the fetch was cancelled")
            if sock is not None:
                self._sockets.append(sock)

    def check(self) -> None:
        if self.cancelled:
            raise httpcore.ReadError("the fetch was cancelled")

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/send in the fetching thread
            except OSError:
                pass


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write is bounded by what is left of one overall deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float, cancel: FetchCancel | None = None) -> None:
        self._inner = inner
        self._deadline = deadline
        self._cancel = cancel

    def _timeout(self, timeout: float | None) -> float:
        if self._cancel is not None:
            self._cancel.check()
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the overall time limit was reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, self._timeout(timeout))
        if self._cancel is not None:
            self._cancel.check()  # a socket shut down by cancel() reads as EOF: not the end of the body
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> "_DeadlineStream":
        inner = self._inner.start_tls(ssl_context, server_hostname, self._timeout(timeout))
        return _DeadlineStream(inner, self._deadline, self._cancel)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects ``host`` only to the given, already checked addresses; any other host is refused."""

    def __init__(self, host: str, addresses: list[IPAddress], deadline: float,
                 cancel: FetchCancel | None = None) -> None:
        self._host = host.lower()
        self._addresses = addresses
        self._deadline = deadline
        self._cancel = cancel
        self._inner = httpcore.SyncBackend()

    def connect_tcp(  # type: ignore[no-untyped-def]
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options=None
    ) -> httpcore.NetworkStream:
        if host.lower().strip("[]") != self._host.strip("[]"):
            raise httpcore.ConnectError(f"{host} was not checked for this request")
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for ip in self._addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the overall time limit was reached")
            budget = left if timeout is None else min(timeout, left)
            try:
                stream = self._inner.connect_tcp(str(ip), port, budget, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            if self._cancel is not None:
                try:
                    self._cancel.register(stream.get_extra_info("socket"))
                except httpcore.ConnectError:
                    stream.close()
                    raise
            return _DeadlineStream(stream, self._deadline, self._cancel)
        raise error

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _CoreStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """One verifying context per CA bundle (loading certifi's bundle each time costs milliseconds)."""
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return httpx.create_ssl_context()


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool whose network backend is a :class:`PinnedBackend`.

    httpcore exceptions pass through unchanged; :func:`fetch_image_bytes` turns them into FetchErrors.
    """

    def __init__(self, backend: PinnedBackend, *, ca_bundle: Path | None = None) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(ca_bundle),
            max_connections=1,
            http1=True,
            http2=False,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _check_scheme(url: httpx.URL, shown: str) -> None:
    if url.scheme not in ("http", "https"):
        scheme = url.scheme or "(none)"
        raise URLPolicyError(
            f"URL scheme {scheme!r} is not allowed for images ({shown})",
            "use an http:// or https:// URL, a data: URL or base64; local files are passed as plain paths "
            "where local paths are allowed",
        )
    if not url.host:
        raise URLPolicyError(f"URL {shown} has no host", "write the URL as http(s)://host/path")


def _short(url: httpx.URL | str) -> str:
    """The URL for messages: credentials removed, long ones shortened."""
    text = _USERINFO.sub("//", str(url), count=1)
    return text if len(text) <= 200 else text[:197] + "..."


def fetch_image_bytes(url: str, policy: ImagePolicy, cancel: FetchCancel | None = None) -> bytes:
    """Download the image at ``url`` under ``policy``; raise URLPolicyError/FetchError/ImageError.

    ``cancel`` (optional) lets another thread end the fetch early (then a FetchError says it was cancelled)."""
    deadline = time.monotonic() + policy.timeout_s
    try:
        current = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise URLPolicyError(f"{_short(url)} is not a valid URL: {exc}", "check the image URL") from None
    for _hop in range(policy.max_redirects + 1):
        _check_scheme(current, _short(current))
        outcome = _fetch_one(current, policy, deadline, cancel)
        if isinstance(outcome, bytes):
            return outcome
        log.debug("image URL %s redirects to %s", _short(current), _short(outcome))
        current = outcome
    raise FetchError(
        f"{_short(url)} redirected more than {policy.max_redirects} time(s)",
        "use the final image URL directly, or raise max_redirects",
    )


def _transport(backend: PinnedBackend, policy: ImagePolicy) -> PinnedTransport:
    try:
        return PinnedTransport(backend, ca_bundle=policy.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(
            f"cannot load the CA bundle {policy.ca_bundle}: {exc}", "point ca_bundle at a PEM file of certificates"
        ) from None


def _fetch_one(url: httpx.URL, policy: ImagePolicy, deadline: float,
               cancel: FetchCancel | None = None) -> bytes | httpx.URL:
    """One hop: the body when it is an image, or the next URL when the server redirects."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(
            f"fetching {_short(url)} took longer than {policy.timeout_s:g}s",
            "use a faster image URL, send the image as base64, or raise timeout_s",
        )
    addresses = checked_addresses(host, port, policy, min(left, policy.connect_timeout_s))
    if cancel is not None and cancel.cancelled:
        raise FetchError(f"fetching {_short(url)} was cancelled", "the request ended before the image arrived")
    backend = PinnedBackend(host, addresses, deadline, cancel)
    timeout = httpx.Timeout(policy.timeout_s, connect=min(policy.connect_timeout_s, policy.timeout_s))
    # identity: a compressed body could inflate past max_bytes inside one chunk before the cap sees it.
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "image/*, application/octet-stream;q=0.5",
        "Accept-Encoding": "identity",
    }
    try:
        with httpx.Client(transport=_transport(backend, policy), timeout=timeout, trust_env=False) as client:
            with client.stream("GET", url, headers=headers, follow_redirects=False) as response:
                return _handle_response(url, response, policy)
    except (httpcore.TimeoutException, httpx.TimeoutException):
        raise FetchError(
            f"fetching {_short(url)} took longer than {policy.timeout_s:g}s",
            "use a faster or smaller image URL, send the image as base64, or raise timeout_s",
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpx.TransportError) as exc:
        if cancel is not None and cancel.cancelled:
            raise FetchError(f"fetching {_short(url)} was cancelled",
                             "the request ended before the image arrived") from None
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise FetchError(
                f"the TLS certificate of {url.host} is not trusted or not issued for that name ({exc})",
                "use a URL whose certificate is valid, or set ca_bundle to your organisation's CA file",
            ) from None
        raise FetchError(
            f"could not fetch {_short(url)}: {type(exc).__name__}: {exc}",
            "check that the URL is reachable, or send the image as base64 / a data URL",
        ) from None


def _handle_response(url: httpx.URL, response: httpx.Response, policy: ImagePolicy) -> bytes | httpx.URL:
    status = response.status_code
    if status in _REDIRECTS:
        location = response.headers.get("location")
        if not location:
            raise FetchError(f"{_short(url)} answered {status} without a Location header", "use the final image URL")
        try:
            return url.join(location)
        except (httpx.InvalidURL, ValueError) as exc:
            raise URLPolicyError(
                f"{_short(url)} redirects to an invalid URL: {exc}", "use the final image URL"
            ) from None
    if status >= 400 or status < 200 or status in (204, 205):
        reason = response.reason_phrase or ""
        raise FetchError(f"{_short(url)} answered HTTP {status} {reason}".rstrip(), "check that the image URL is right")
    _check_content_type(url, response.headers.get("content-type", ""))
    _check_declared_length(url, response.headers.get("content-length"), policy)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(
            f"{_short(url)} was sent {encoding}-compressed although identity was asked for",
            "serve the image uncompressed, or download it and send it as base64",
        )
    return _read_capped(url, response, policy)


def _check_content_type(url: httpx.URL, header: str) -> None:
    media = header.split(";", 1)[0].strip().lower()
    if media in ("image/svg+xml", "image/svg"):
        raise ImageError(
            f"{_short(url)} is an SVG image; vector images are not supported", "convert it to PNG or JPEG first"
        )
    if not media or media.startswith("image/") or media in ALLOWED_CONTENT_TYPES:
        return
    raise FetchError(
        f"{_short(url)} is {media}, not an image",
        "link the image file itself (content type image/*), not a web page about it",
    )


def _check_declared_length(url: httpx.URL, header: str | None, policy: ImagePolicy) -> None:
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        return
    if declared > policy.max_bytes:
        raise FetchError(
            f"{_short(url)} is {declared} bytes, over the limit of {policy.max_bytes} bytes",
            "use a smaller image, or raise max_bytes",
        )


def _read_capped(url: httpx.URL, response: httpx.Response, policy: ImagePolicy) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_raw():
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchError(
                f"{_short(url)} sent more than the limit of {policy.max_bytes} bytes",
                "use a smaller image, or raise max_bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks)
