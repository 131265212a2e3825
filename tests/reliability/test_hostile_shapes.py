"""Thin and extreme-aspect images against the starter experts (tagger, OCR, colours) in a ``moesaic serve``
subprocess under an 8 GiB address-space cap. A 277-byte 1×100000 PNG once took the server to 22.5 GB;
3000×8, 8×3000 and 1×1000 were 500s (a 5.7 GiB OCR tensor for the last). Each must now be a correct 200 within
seconds through every route (chat, SSE, /invocations with raw bytes), the server alive and its peak memory far
below the cap."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from capped_server import capped_server

pytest.importorskip("moesaic.experts.backend")

SHAPES = {"1x100000": ("1", (1, 100_000), 1), "3000x8": ("RGB", (3000, 8), (200, 0, 0)),
          "8x3000": ("RGB", (8, 3000), (0, 0, 200)), "1x1000": ("RGB", (1, 1000), (0, 150, 0))}
COLOUR = {"1x100000": "white", "3000x8": "red", "8x3000": "blue", "1x1000": "green"}
PEAK_MIB = 3 * 1024  # the starter experts and a large image; the 1×100000 PNG alone once used 22 GB


def png(mode: str, size: tuple[int, int], color: object) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.new(mode, size, color).save(buf, format="PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def chat_body(raw: bytes, stream: bool = False) -> dict:
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    return {"model": "starter", "stream": stream, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour is this?"}]}]}


@pytest.mark.slow
def test_thin_images_are_answered_under_a_memory_cap():
    with capped_server("--model", "starter") as server:
        good = chat_body(png("RGB", (64, 48), (0, 0, 200)))
        r = httpx.post(f"{server.url}/v1/chat/completions", json=good, timeout=300)  # loads the experts
        assert r.status_code == 200, r.text
        for name, (mode, size, color) in SHAPES.items():
            raw = png(mode, size, color)
            started = time.monotonic()
            r = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body(raw), timeout=120)
            assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:300]}"
            assert COLOUR[name] in r.json()["choices"][0]["message"]["content"], (name, r.text[:300])
            r = httpx.post(f"{server.url}/invocations?question=What+colour+is+this%3F", content=raw,
                           headers={"Content-Type": "image/png"}, timeout=120)
            assert r.status_code == 200 and COLOUR[name] in r.json()["answer"], f"{name}: {r.text[:300]}"
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=chat_body(raw, True), timeout=120) as s:
                events = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
            assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events), (name, events[-3:])
            assert time.monotonic() - started < 90, f"{name} took {time.monotonic() - started:.0f}s for 3 requests"
            assert server.alive(), f"the server died on {name}"
            assert httpx.post(f"{server.url}/v1/chat/completions", json=good, timeout=120).status_code == 200
        rss, peak = server.rss()
        assert peak < PEAK_MIB, f"peak RSS {peak:.0f} MiB"
