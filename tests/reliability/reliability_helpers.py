"""Reliability-test helpers (imported as ``reliability_helpers``): a real uvicorn server on a free loopback
port, a hostile loopback HTTP server (slow, endless, oversized, redirecting bodies) and a fake DNS that maps
made-up ``*.test`` names to chosen addresses for the resolver :mod:`moesaic.inputs.addresses` uses."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from moesaic.testing.server import running  # noqa: F401 - re-exported for the tests

__all__ = ["png_bytes", "data_url", "running", "start_evil_server", "FAKE_DNS", "fake_getaddrinfo", "free_port",
           "GOOD_BODY", "good_request_ok"]

# made-up names → the addresses the fake resolver returns (the server allow-lists only "evil.test")
FAKE_DNS: dict[str, list[str]] = {
    "evil.test": ["127.0.0.1"],
    "loopback.test": ["127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "192.168.0.7"],
    "v6loop.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
}


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


GOOD_BODY: dict[str, Any] = {
    "model": "tiny", "max_tokens": 2,
    "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes((0, 0, 255)))}},
        {"type": "text", "text": "what colour is this?"}]}],
}


def good_request_ok(base: str) -> bool:
    """The server still answers a good request (image + text) with a real completion."""
    import httpx

    r = httpx.post(f"{base}/v1/chat/completions", json=GOOD_BODY, timeout=30)
    return r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def make_fake_getaddrinfo(real: Callable[..., Any]) -> Callable[..., Any]:
    """A ``socket.getaddrinfo`` that answers the made-up names and defers everything else to ``real``."""

    def fake(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name == "nx.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name not in FAKE_DNS:
            return real(host, port, family, type, proto, flags)
        out = []
        for ip in FAKE_DNS[name]:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addr = (ip, int(port or 0), 0, 0) if fam == socket.AF_INET6 else (ip, int(port or 0))
            out.append((fam, socket.SOCK_STREAM, 6, "", addr))
        return out

    return fake


fake_getaddrinfo = make_fake_getaddrinfo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _EvilHandler(http.server.BaseHTTPRequestHandler):
    """Routes: /red.png, /drip (1 byte per 0.2 s, forever), /endless (zeros, no length, forever),
    /huge-declared (Content-Length 1 GiB), /html, /svg, /missing (404), /redirect?to=URL, /loop."""

    protocol_version = "HTTP/1.1"
    png = png_bytes((255, 0, 0))

    def _head(self, status: int, ctype: str, length: int | None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        try:
            self._route(url.path, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the fetcher gave up, as it should

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/red.png":
            self._head(200, "image/png", len(self.png))
            self.wfile.write(self.png)
        elif path == "/drip":
            self._head(200, "image/png", None, {"Connection": "close"})
            for _ in range(600):  # at most 2 minutes, far past any fetch deadline
                self.wfile.write(self.png[:1])
                self.wfile.flush()
                time.sleep(0.2)
        elif path == "/endless":
            self._head(200, "image/png", None, {"Connection": "close"})
            chunk = self.png + b"\0" * 65536
            for _ in range(100_000):  # ~6.5 GB: only the size cap can stop it in time
                self.wfile.write(chunk)
        elif path == "/huge-declared":
            self._head(200, "image/png", 1 << 30)
            self.wfile.write(self.png)
        elif path == "/html":
            body = b"<!doctype html><html><body><img src=/red.png></body></html>"
            self._head(200, "text/html", len(body))
            self.wfile.write(body)
        elif path == "/svg":
            body = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
            self._head(200, "image/svg+xml", len(body))
            self.wfile.write(body)
        elif path == "/redirect":
            self._head(302, "text/plain", 0, {"Location": query["to"][0]})
        elif path == "/loop":
            self._head(302, "text/plain", 0, {"Location": "/loop"})
        else:
            self._head(404, "text/plain", 0)

    def log_message(self, *args: object) -> None:
        pass


def start_evil_server() -> tuple[http.server.ThreadingHTTPServer, int]:
    """The hostile loopback server and its port (reach it as http://evil.test:PORT/...)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvilHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, int(httpd.server_address[1])
