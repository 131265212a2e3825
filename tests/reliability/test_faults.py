"""Faults on a real server with the real HF backend of a tiny random Idefics3: a backend exception fails only
its own request (also inside a batch), a client leaving mid-stream frees the model, and SIGTERM on a
``moesaic serve`` subprocess finishes the in-flight stream, refuses new connections and exits 0."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from reliability_helpers import GOOD_BODY, data_url, free_port, png_bytes, running

from moesaic.backends.base import Backend, GenerationParams, StreamChunk
from moesaic.inputs.messages import Turn
from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

pytest.importorskip("moesaic.backends.hf")


class Faulty(Backend):
    """The real HF backend, plus two faults: a prompt saying "boom" raises, and streams are re-cut into one
    character per chunk with a pause (a tiny random model's byte soup otherwise arrives as one chunk).
    A prompt saying "hold" keeps the model thread busy until ``release`` is set (so a test can fill the queue)."""

    def __init__(self, inner: Backend, chunk_delay_s: float = 0.0) -> None:
        self.inner = inner
        self.name, self.can_batch, self.can_stream = inner.name, inner.can_batch, True
        self.supports_images, self.max_images = inner.supports_images, inner.max_images
        self.chunk_delay_s = chunk_delay_s
        self.chunks_sent = 0
        self.stream_closed = threading.Event()
        self.batch_sizes: list[int] = []
        self.release = threading.Event()
        self.seen: list[str] = []  # the text of every prompt that reached the model

    @staticmethod
    def _poisoned(prompt: list[Turn]) -> bool:
        return any("boom" in t.text for t in prompt)

    def generate(self, prompt, params=None):  # type: ignore[no-untyped-def]
        self.batch_sizes.append(1)
        self.seen.append(" ".join(t.text for t in prompt))
        if any("hold" in t.text for t in prompt):
            assert self.release.wait(30), "the test never released the model"
        if self._poisoned(prompt):
            raise RuntimeError("CUDA error: device-side assert in /secret/path/kernel.cu")
        return self.inner.generate(prompt, params)

    def generate_batch(self, prompts, params=None):  # type: ignore[no-untyped-def]
        self.batch_sizes.append(len(prompts))
        self.seen.extend(" ".join(t.text for t in p) for p in prompts)
        if any(self._poisoned(p) for p in prompts):
            raise RuntimeError("CUDA error: device-side assert in /secret/path/kernel.cu")
        return self.inner.generate_batch(prompts, params)

    def stream(self, prompt, params=None) -> Iterator[StreamChunk]:  # type: ignore[no-untyped-def]
        if self._poisoned(prompt):
            raise RuntimeError("stream exploded in /secret/path")
        try:
            for chunk in self.inner.stream(prompt, params):
                if chunk.answer is not None:
                    yield chunk
                    continue
                for char in chunk.text:  # the real text, one character at a time: a slow model's pace
                    time.sleep(self.chunk_delay_s)
                    self.chunks_sent += 1
                    yield StreamChunk(text=char)
        finally:
            self.stream_closed.set()


def body(text: str, **kw: object) -> dict:
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
                                         {"type": "text", "text": text}]}]
    return {"model": "tiny", "messages": msgs, "max_tokens": 3, **kw}


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    from moesaic.backends.registry import load_backend

    return load_backend(str(tiny_model_dir("idefics3")))


def test_backend_exception_fails_only_its_request(hf_backend):
    faulty = Faulty(hf_backend)
    settings = ServeConfig(model="tiny", max_batch_size=4, batch_wait_ms=300)
    texts = ["describe it", "boom", "what colour?", "hello"]
    app = create_app(settings, faulty)
    post = lambda t: httpx.post(f"{url}/v1/chat/completions", json=body(t), timeout=60)  # noqa: E731
    with running(app) as url, cf.ThreadPoolExecutor(5) as pool:
        held = pool.submit(post, "hold")  # occupies the model thread, so the next four queue up together
        _wait_until(lambda: faulty.batch_sizes == [1], "the hold request never reached the model")
        futures = [pool.submit(post, t) for t in texts]
        _wait_until(lambda: app.state.service.batcher.depth == len(texts), "the four requests never queued")
        faulty.release.set()
        rs = [f.result() for f in futures]
        assert held.result().status_code == 200
        assert faulty.batch_sizes[:2] == [1, 4], faulty.batch_sizes  # the poisoned request shared a batch of 4
        assert faulty.batch_sizes[2:] == [1, 1, 1, 1], faulty.batch_sizes  # then each was retried alone
        assert [r.status_code for r in rs] == [200, 500, 200, 200], [r.text for r in rs]
        error = rs[1].json()["error"]
        assert error["type"] == "server_error" and error["code"] == "internal_error"
        assert "secret" not in error["message"] and "CUDA" not in error["message"]
        from moesaic.inputs.messages import ChatMessage, resolve_messages

        for text, r in zip(texts, rs, strict=True):
            if text != "boom":  # the neighbours got exactly their own greedy answer
                turns = resolve_messages([ChatMessage.model_validate(m) for m in body(text)["messages"]])
                assert r.json()["choices"][0]["message"]["content"] == hf_backend.generate(
                    turns, GenerationParams(max_new_tokens=3)).text
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body("boom", stream=True), timeout=60) as s:
            events = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "internal_error"
        ok = httpx.post(f"{url}/v1/chat/completions", json=GOOD_BODY, timeout=60)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


def _wait_until(condition, what: str, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_client_leaving_mid_stream_frees_the_model(hf_backend):
    faulty = Faulty(hf_backend, chunk_delay_s=0.05)
    with running(create_app(ServeConfig(model="tiny", max_tokens_limit=200), faulty)) as url:
        full = httpx.post(f"{url}/v1/chat/completions", json=body("a long story", max_tokens=60, stream=True),
                          timeout=60)
        full_chunks = faulty.chunks_sent
        assert full_chunks >= 40, full_chunks  # a whole stream takes ≥ 2 s: long enough to walk away from
        assert full.text.rstrip().endswith("data: [DONE]")
        faulty.chunks_sent, _ = 0, faulty.stream_closed.clear()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body("a long story", max_tokens=60,
                                                                          stream=True), timeout=60) as s:
            lines = s.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few events, then the client hangs up
        assert any('"content"' in g for g in got)
        assert faulty.stream_closed.wait(5), "the backend kept generating for a client that left"
        assert faulty.chunks_sent < full_chunks - 10, (faulty.chunks_sent, full_chunks)
        started = time.monotonic()
        ok = httpx.post(f"{url}/v1/chat/completions", json=GOOD_BODY, timeout=60)
        assert ok.status_code == 200 and time.monotonic() - started < 5  # the slot was free at once


def test_client_leaving_a_queued_request_never_reaches_the_model(hf_backend):
    faulty = Faulty(hf_backend)
    app = create_app(ServeConfig(model="tiny"), faulty)
    post = lambda t, **kw: httpx.post(f"{url}/v1/chat/completions", json=body(t), **kw)  # noqa: E731
    with running(app) as url, cf.ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, "hold", timeout=60)
        _wait_until(lambda: faulty.batch_sizes == [1], "the hold request never reached the model")
        with pytest.raises(httpx.ReadTimeout):  # queued behind "hold"; the client gives up and hangs up
            post("abandoned question", timeout=httpx.Timeout(10, read=0.5))
        pending = app.state.service.batcher._pending  # still queued, until the server notices the hang-up
        assert len(pending) == 1
        _wait_until(lambda: pending[0].dropped(), "the abandoned job was not dropped")
        faulty.release.set()
        assert held.result().status_code == 200
        assert post("what colour?", timeout=60).status_code == 200
    assert not any("abandoned" in text for text in faulty.seen), faulty.seen
    assert any("what colour?" in text for text in faulty.seen)


def _wait_ready(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
        try:
            if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not answer /ping in time"
        time.sleep(0.3)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_stream_then_exits_0(tiny_model_dir):
    folder = tiny_model_dir("idefics3")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "moesaic.cli", "serve", "--model", str(folder), "--port",
                             str(port), "--served-model-name", "tiny", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        request = body("tell me everything", max_tokens=400, stream=True)
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=request, timeout=120) as s:
            lines = s.iter_lines()
            head = [next(lines) for _ in range(4)]  # generation has started: the request is in flight
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
                pass  # the listening socket is closed: new connections are refused
            rest = list(lines)
        events = [ln[6:] for ln in head + rest if ln.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        final = [json.loads(e) for e in events[:-1] if '"finish_reason":"length"' in e.replace(" ", "")]
        assert final, "the in-flight stream did not run to its full length"
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                       if json.loads(e).get("choices"))
        assert len(text) > 50
        assert proc.wait(timeout=60) == 0, proc.stdout.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
