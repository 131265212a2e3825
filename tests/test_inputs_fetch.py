"""Fetching images over http(s): SSRF refusals, redirects, DNS pinning, size and time caps.

Every server here is a thread on 127.0.0.1 with port 0; nothing reaches beyond loopback (conftest blocks it).
"""

from __future__ import annotations

import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from moesaic.errors import FetchError, ImageError, URLPolicyError
from moesaic.inputs import ImagePolicy, load_image
from moesaic.inputs.fetch import fetch_image_bytes

LOCAL = ImagePolicy(allow_private_hosts=["127.0.0.1"])


def _png(color: tuple[int, int, int] = (10, 200, 30), size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[["_Handler"], None]] = {}
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Host", "")))
        route = self.routes.get(urlparse(self.path).path)
        try:
            if route is None:
                self.send_error(404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (size cap, timeout)

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, body: bytes, ctype: str = "image/png", length: bool = True, **headers: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)


def _redirect(h: _Handler) -> None:
    target = parse_qs(urlparse(h.path).query)["to"][0]
    h.send_response(302)
    h.send_header("Location", target)
    h.send_header("Content-Length", "0")
    h.end_headers()


def _slow(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(20):  # one byte every 0.15 s: each read is quick, the whole body is not
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.15)


ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/img.png": lambda h: h.reply(PNG),
    "/octet": lambda h: h.reply(PNG, "application/octet-stream"),
    "/page": lambda h: h.reply(b"<html><body>hello</body></html>", "text/html; charset=utf-8"),
    "/vector": lambda h: h.reply(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    "/big": lambda h: h.reply(b"\0" * 200_000),
    "/big-nolen": lambda h: h.reply(b"\0" * 200_000, length=False),
    "/gzip": lambda h: h.reply(PNG, Content_Encoding="gzip"),
    "/redirect": _redirect,
    "/loop": lambda h: (h.send_response(302), h.send_header("Location", "/loop"), h.end_headers()),
    "/slow": _slow,
    "/stall": lambda h: (time.sleep(2.0), h.reply(PNG)),  # accepts, then says nothing for 2 s
}


@pytest.fixture()
def server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Handler,), {"routes": ROUTES, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


class FakeDNS:
    """Made-up names → answers. ``answers[name]`` is a list of answers, one per lookup (the last repeats)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def __setitem__(self, name: str, addresses: list[str]) -> None:
        self.answers[name] = [addresses]

    def sequence(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def lookup(self, name: str, port: int) -> list[Any]:
        self.calls.append(name)
        answers = self.answers[name]
        chosen = answers[min(self.calls.count(name), len(answers)) - 1]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in chosen
        ]


@pytest.fixture()
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Patch socket.getaddrinfo: names in the fake table are answered from it, others by the real resolver."""
    dns = FakeDNS()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name in dns.answers:
            return dns.lookup(name, int(port or 0))
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


# --- SSRF against a real local server -------------------------------------------------------------------


def test_loopback_is_refused_by_default_and_never_contacted(server: tuple[str, list]) -> None:
    base, seen = server
    with pytest.raises(URLPolicyError) as info:
        load_image(f"{base}/img.png")
    assert "127.0.0.1" in info.value.message and "loopback" in info.value.message
    assert "allow_private_hosts" in (info.value.hint or "")
    assert seen == []


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8"])
def test_loopback_is_fetched_when_allow_listed(server: tuple[str, list], allow: str) -> None:
    base, seen = server
    image = load_image(f"{base}/img.png", ImagePolicy(allow_private_hosts=[allow]))
    assert image.mode == "RGB" and image.size == (24, 16)
    assert image.getpixel((3, 3)) == (10, 200, 30)
    assert [p for p, _ in seen] == ["/img.png"]


def test_octet_stream_is_accepted(server: tuple[str, list]) -> None:
    assert load_image(f"{server[0]}/octet", LOCAL).getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize("url", ["http://[::ffff:127.0.0.1]:9/x.png", "http://0.0.0.0:9/x.png", "http://[::1]:9/",
                                 "http://169.254.169.254/latest/meta-data/", "http://2130706433/x.png"])
def test_disguised_local_addresses_are_refused(url: str) -> None:
    with pytest.raises(URLPolicyError, match="refusing to fetch"):
        load_image(url)


def test_name_resolving_to_loopback_is_refused(server: tuple[str, list], fake_dns: FakeDNS) -> None:
    base, seen = server
    port = base.rsplit(":", 1)[1]
    fake_dns["evil.test"] = ["127.0.0.1"]
    with pytest.raises(URLPolicyError) as info:
        load_image(f"http://evil.test:{port}/img.png")
    assert "resolved from evil.test" in info.value.message and "loopback" in info.value.message
    assert seen == []


def test_every_resolved_address_is_checked(fake_dns: FakeDNS) -> None:
    fake_dns["mixed.test"] = ["8.8.8.8", "10.0.0.9"]
    with pytest.raises(URLPolicyError, match="10.0.0.9"):
        load_image("http://mixed.test/img.png")


def test_connection_is_pinned_to_the_checked_address(server: tuple[str, list], fake_dns: FakeDNS) -> None:
    # First lookup answers loopback (allow-listed), any later one would answer a metadata address: the
    # fetch must succeed, resolve once, and keep the name in the Host header.
    base, seen = server
    port = base.rsplit(":", 1)[1]
    fake_dns.sequence("rebind.test", ["127.0.0.1"], ["169.254.169.254"])
    image = load_image(f"http://rebind.test:{port}/img.png", LOCAL)
    assert image.getpixel((0, 0)) == (10, 200, 30)
    assert fake_dns.calls.count("rebind.test") == 1
    assert seen == [("/img.png", f"rebind.test:{port}")]


def test_next_checked_address_is_tried_when_one_refuses(server: tuple[str, list], fake_dns: FakeDNS) -> None:
    base, seen = server
    port = base.rsplit(":", 1)[1]
    fake_dns["dual.test"] = ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2
    image = load_image(f"http://dual.test:{port}/img.png", ImagePolicy(allow_private_hosts=["127.0.0.0/8"]))
    assert image.size == (24, 16) and seen == [("/img.png", f"dual.test:{port}")]


def test_host_name_can_be_allow_listed(server: tuple[str, list], fake_dns: FakeDNS) -> None:
    base, _ = server
    port = base.rsplit(":", 1)[1]
    fake_dns["images.internal"] = ["127.0.0.1"]
    policy = ImagePolicy(allow_private_hosts=["images.internal"])
    assert load_image(f"http://images.internal:{port}/img.png", policy).size == (24, 16)


def test_allow_hosts_restricts_urls_to_named_hosts(server: tuple[str, list]) -> None:
    policy = ImagePolicy(allow_private_hosts=["127.0.0.1"], allow_hosts=["cdn.example.com"])
    with pytest.raises(URLPolicyError, match="not in the allowed hosts"):
        load_image(f"{server[0]}/img.png", policy)


def test_redirect_to_disallowed_address_is_refused(server: tuple[str, list]) -> None:
    base, seen = server
    port = base.rsplit(":", 1)[1]
    for target, why in [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.7/x.png", "private"),
        (f"http://127.0.0.2:{port}/img.png", "loopback"),  # only 127.0.0.1 is allow-listed
    ]:
        with pytest.raises(URLPolicyError, match=why):
            load_image(f"{base}/redirect?to={target}", LOCAL)
    assert [p.split("?")[0] for p, _ in seen] == ["/redirect"] * 3


def test_redirect_to_other_scheme_is_refused(server: tuple[str, list]) -> None:
    with pytest.raises(URLPolicyError, match="scheme 'file'"):
        load_image(f"{server[0]}/redirect?to=file:///etc/passwd", LOCAL)


def test_relative_redirect_is_followed_and_loops_stop(server: tuple[str, list]) -> None:
    base, _ = server
    assert load_image(f"{base}/redirect?to=/img.png", LOCAL).size == (24, 16)
    with pytest.raises(FetchError, match="redirected more than 2"):
        load_image(f"{base}/loop", LOCAL.model_copy(update={"max_redirects": 2}))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/1",
                                 "FILE:///etc/hosts", "file:/etc/passwd", "javascript:alert(1)"])
def test_non_http_schemes_are_refused(url: str) -> None:
    with pytest.raises(URLPolicyError, match="scheme") as info:
        load_image(url, ImagePolicy(allow_local_paths=True))
    assert "http" in (info.value.hint or "")


def test_declared_size_over_cap_is_refused_before_reading(server: tuple[str, list]) -> None:
    policy = LOCAL.model_copy(update={"max_bytes": 50_000})
    with pytest.raises(FetchError, match="200000 bytes, over the limit of 50000"):
        load_image(f"{server[0]}/big", policy)


def test_streamed_size_over_cap_is_aborted(server: tuple[str, list]) -> None:
    policy = LOCAL.model_copy(update={"max_bytes": 50_000})
    with pytest.raises(FetchError, match="sent more than the limit of 50000"):
        fetch_image_bytes(f"{server[0]}/big-nolen", policy)


def test_slow_body_hits_the_total_timeout(server: tuple[str, list]) -> None:
    policy = LOCAL.model_copy(update={"timeout_s": 0.6})
    start = time.monotonic()
    with pytest.raises(FetchError, match="longer than 0.6s"):
        load_image(f"{server[0]}/slow", policy)
    assert time.monotonic() - start < 1.5  # the total budget, not one read timeout per byte


def test_silent_server_hits_the_total_timeout(server: tuple[str, list]) -> None:
    start = time.monotonic()
    with pytest.raises(FetchError, match="longer than 0.4s"):
        load_image(f"{server[0]}/stall", LOCAL.model_copy(update={"timeout_s": 0.4}))
    assert time.monotonic() - start < 1.2


@pytest.mark.parametrize("path,error,match", [
    ("/page", FetchError, "text/html, not an image"),
    ("/vector", ImageError, "SVG"),
    ("/nothing-here", FetchError, "HTTP 404"),
    ("/gzip", FetchError, "gzip-compressed"),
])
def test_bad_responses_are_refused(server: tuple[str, list], path: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        load_image(f"{server[0]}{path}", LOCAL)
    assert info.value.hint


def test_connection_refused_is_a_fetch_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="could not fetch"):
        load_image(f"http://127.0.0.1:{port}/img.png", LOCAL)


# --- https: the pinned connection keeps SNI, Host and certificate checks on the name --------------------


@pytest.fixture()
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str], list[tuple[str, str]]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=images.test",
         "-addext", "subjectAltName=DNS:images.test"],
        check=True, capture_output=True,
    )
    sni: list[str] = []
    seen: list[tuple[str, str]] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment,misc]
    handler = type("Handler", (_Handler,), {"routes": ROUTES, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda *a: None  # type: ignore[method-assign]  # refused handshakes are expected
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], cert, sni, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_through_a_pinned_address_keeps_sni_and_host(https_server: tuple, fake_dns: FakeDNS) -> None:
    port, cert, sni, seen = https_server
    fake_dns["images.test"] = ["127.0.0.1"]
    policy = ImagePolicy(allow_private_hosts=["127.0.0.1"], ca_bundle=cert)
    image = load_image(f"https://images.test:{port}/img.png", policy)
    assert image.getpixel((0, 0)) == (10, 200, 30)
    assert sni == ["images.test"]
    assert seen == [("/img.png", f"images.test:{port}")]


def test_https_certificate_is_checked_against_the_name(https_server: tuple, fake_dns: FakeDNS) -> None:
    port, cert, _sni, seen = https_server
    fake_dns["other.test"] = ["127.0.0.1"]
    fake_dns["images.test"] = ["127.0.0.1"]
    trusted = ImagePolicy(allow_private_hosts=["127.0.0.1"], ca_bundle=cert)
    with pytest.raises(FetchError, match="not trusted or not issued for that name"):
        load_image(f"https://other.test:{port}/img.png", trusted)  # same address, wrong name
    with pytest.raises(FetchError, match="TLS certificate"):
        load_image(f"https://images.test:{port}/img.png", ImagePolicy(allow_private_hosts=["127.0.0.1"]))
    assert seen == []


def test_idn_host_is_resolved_in_its_ascii_form_and_checked(fake_dns: FakeDNS) -> None:
    fake_dns["xn--bcher-kva.test"] = ["10.1.1.1"]
    with pytest.raises(URLPolicyError, match="resolved from xn--bcher-kva.test"):
        load_image("http://bücher.test/cover.jpg")
