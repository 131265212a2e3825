"""What a hostile client can send the server, beyond the bad-input corpus: bodies that are cheap to send and
expensive to parse, memory held by decoded images, fetches that outlive their request, slow headers and
bodies, errors echoing the input. The backend is the small deterministic :class:`ColorBackend`."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from serve_helpers import ColorBackend, data_url, png_bytes, running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig


def make_app(backend: ColorBackend | None = None, **settings: object):
    return create_app(ServeConfig(model="colors", **settings), backend or ColorBackend())


def chat(url: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, **kw)


def good(url: str) -> bool:
    body = {"model": "colors", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes((0, 0, 255)))}}, {"type": "text", "text": "?"}]}]}
    r = chat(url, body)
    return r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("blue")


def ping_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            path = "/ping" if len(out) % 2 else "/health"
            assert client.get(f"{url}{path}").status_code == 200
            out.append(time.perf_counter() - started)
            time.sleep(0.01)


def test_message_and_part_caps_count_empty_ones():
    with running(make_app(max_messages=8, max_content_parts=12, max_body_bytes=30 * 1024 * 1024)) as url:
        nine = {"model": "colors", "messages": [{"role": "user", "content": ""}] * 9}
        r = chat(url, nine)
        assert r.status_code == 400 and "9 messages given; at most 8" in r.json()["error"]["message"], r.text
        parts = {"model": "colors", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * 13}]}
        r = chat(url, parts)
        assert r.status_code == 400 and "13 content parts given; at most 12" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/invocations", json=nine, timeout=30)
        assert r.status_code == 400 and "at most 8" in r.json()["error"]["message"]
        eight = {"model": "colors", "messages": [{"role": "user", "content": ""}] * 7 + [
            {"role": "user", "content": "what colour?"}]}
        assert chat(url, eight).status_code == 200
        assert good(url)


def test_ping_answers_fast_while_huge_bodies_are_refused():
    """600 000 empty messages (19 MB) parsed on the event loop once made /ping wait 8.9 s."""
    flood = json.dumps({"model": "colors", "messages": [{"role": "user", "content": ""}] * 600_000}).encode()
    zeros = json.dumps({"model": "colors", "messages": [], "x": [0] * 5_000_000}).encode()
    with running(make_app(max_body_bytes=30 * 1024 * 1024)) as url:
        baseline: list[float] = []
        stop = threading.Event()
        stop.set()
        for _ in range(10):
            started = time.perf_counter()
            httpx.get(f"{url}/ping")
            baseline.append(time.perf_counter() - started)
        stop.clear()
        latencies: list[float] = []
        pinger = threading.Thread(target=ping_latencies, args=(url, stop, latencies))
        pinger.start()
        try:
            for body in (flood, zeros, flood):
                started = time.perf_counter()
                r = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=60)
                assert r.status_code == 400 and "JSON values" in r.json()["error"]["message"], r.text[:300]
                assert time.perf_counter() - started < 5
        finally:
            stop.set()
            pinger.join()
        assert len(latencies) >= 5
        allowed = max(0.1, 5 * sorted(baseline)[len(baseline) // 2])  # 100 ms, or 5× an idle ping on a busy box
        assert max(latencies) < allowed, (max(latencies), sorted(baseline))
        assert good(url)
