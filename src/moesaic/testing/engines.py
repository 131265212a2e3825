"""Real OpenAI-compatible engines for tests and benchmarks of the gateway: ``transformers serve`` as a child
process on a free loopback port, and a small recording engine (a FastAPI app) for what ``transformers serve``
cannot show (what it received, when its client went away, how it fails).

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at run time.
"""


import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["free_port", "transformers_serve", "RecordingEngine", "FAKE_VLLM"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with status {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"transformers serve was not healthy within {timeout_s:g} s")


@contextlib.contextmanager
def transformers_serve(model: str | Path, *, timeout_s: float = 240.0, log: Path | None = None,
                       extra: tuple[str, ...] = (), procs: list[subprocess.Popen[bytes]] | None = None) -> Iterator[str]:
    """``transformers serve MODEL`` (offline, CPU, one thread) on a free loopback port; yields its root URL
    (``http://127.0.0.1:PORT``; the OpenAI API is under ``/v1``) and stops it on exit. ``procs`` receives
    the process (for benchmarks that read its CPU time)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
           "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra]
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if procs is not None:
        procs.append(proc)
    try:
        _wait_healthy(url, proc, timeout_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            out.close()  # type: ignore[union-attr]


class RecordingEngine:
    """A small OpenAI-compatible engine that records what it receives. ``reply`` words are streamed one per
    ``delay_s``; ``fail`` = ``(status, body)`` makes chat completions fail; ``image_hits`` counts GETs of
    ``/img.png`` (a loopback image URL that must never be fetched through the gateway)."""

    def __init__(self, reply: str = "a red square", delay_s: float = 0.0, key: str | None = None) -> None:
        self.reply, self.delay_s, self.key = reply, delay_s, key
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.fail: tuple[int, dict[str, Any]] | None = None
        self.healthy = True
        self.image_hits = 0
        self.chunks_sent = 0
        self.stream_closed = threading.Event()

    def app(self) -> Any:
        import asyncio

        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        app = FastAPI()

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=200 if self.healthy else 500)

        @app.get("/img.png")
        async def image() -> Response:
            self.image_hits += 1
            return Response(b"not fetched", media_type="image/png")

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.bodies.append(body)
            self.keys.append(request.headers.get("authorization"))
            if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
                return JSONResponse({"error": {"message": "invalid key"}}, status_code=401)
            if self.fail is not None:
                return JSONResponse(self.fail[1], status_code=self.fail[0])
            words = self.reply.split(" ")[: body.get("max_tokens", 100)]
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
            if not body.get("stream"):
                return JSONResponse({"id": "x", "object": "chat.completion", "model": body["model"], "usage": usage,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": " ".join(words)}}]})

            async def events() -> Any:
                try:
                    for i, word in enumerate(words):
                        await asyncio.sleep(self.delay_s)
                        self.chunks_sent += 1
                        delta = {"content": word if i == 0 else " " + word}
                        yield f'data: {{"choices": [{{"index": 0, "delta": {_json(delta)}}}]}}\n\n'
                    yield f'data: {{"choices": [{{"index": 0, "delta": {{}}, "finish_reason": "stop"}}], ' \
                          f'"usage": {_json(usage)}}}\n\n'
                    yield "data: [DONE]\n\n"
                finally:
                    self.stream_closed.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        return app


def _json(value: object) -> str:
    import json

    return json.dumps(value)


# A stand-in `vllm` executable for tests of ``--engine vllm`` where vLLM is not installed: serves a
# RecordingEngine on --port that demands the key from $VLLM_API_KEY, writes its argv and environment's key to
# $FAKE_VLLM_RECORD, exits with $FAKE_VLLM_EXIT at once, or with status 5 $FAKE_VLLM_DIE_S seconds after it listens.
FAKE_VLLM = """
import json, os, sys, threading, time
args = sys.argv[1:]
record = os.environ["FAKE_VLLM_RECORD"]
with open(record, "w") as fh:
    json.dump({"argv": args, "key": os.environ.get("VLLM_API_KEY"), "pid": os.getpid()}, fh)
if os.environ.get("FAKE_VLLM_EXIT"):
    sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
port = int(args[args.index("--port") + 1])
def die_later():
    import socket
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        time.sleep(0.1)
    time.sleep(float(os.environ["FAKE_VLLM_DIE_S"]))
    os._exit(5)
if os.environ.get("FAKE_VLLM_DIE_S"):
    threading.Thread(target=die_later, daemon=True).start()
import signal, uvicorn
signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises SIGTERM after draining: let the record follow
from moesaic.testing.engines import RecordingEngine
engine = RecordingEngine(reply="answered by the child", key=os.environ["VLLM_API_KEY"])
uvicorn.run(engine.app(), host="127.0.0.1", port=port, log_level="warning")
with open(record + ".stopped", "w") as fh:
    fh.write("stopped by SIGTERM")
"""
