"""Serving throughput and latency: the HTTP server with dynamic batching at concurrency 1/4/8, against
calling the backend sequentially in-process (the named peer, measured in the same run).

    .venv/bin/python benchmarks/serve_throughput.py --requests 16 --max-tokens 8
    .venv/bin/python benchmarks/serve_throughput.py --model path/to/model --requests 32

Without ``--model`` a tiny random Idefics3 (moesaic.testing) is built in a temporary folder, so the run
is offline; its numbers measure serving overhead and batching, not a real model's speed.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import contextlib
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image

SEED = 0


def image_url(i: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def body(i: int, model: str, max_tokens: int) -> dict:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url(i)}}, {"type": "text", "text": f"describe image {i}"}]}]}


@contextlib.contextmanager
def running(app: object) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def summarise(name: str, latencies: list[float], wall: float, calls: int) -> dict:
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return {"mode": name, "req/s": len(lat) / wall, "p50 ms": 1000 * statistics.median(lat), "p95 ms": 1000 * p95,
            "generate calls": calls}


def sequential(backend, bodies: list[dict]) -> dict:
    from moesaic.backends.base import GenerationParams
    from moesaic.inputs.messages import ChatMessage, resolve_messages

    params = GenerationParams(max_new_tokens=bodies[0]["max_tokens"])
    before, latencies, start = backend.forward_calls, [], time.perf_counter()
    for b in bodies:
        t0 = time.perf_counter()
        backend.generate(resolve_messages([ChatMessage.model_validate(m) for m in b["messages"]]), params)
        latencies.append(time.perf_counter() - t0)
    return summarise("in-process sequential", latencies, time.perf_counter() - start, backend.forward_calls - before)


def served(url: str, backend, bodies: list[dict], concurrency: int) -> dict:
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=concurrency))  # kept-alive connections

    def one(b: dict) -> float:
        t0 = time.perf_counter()
        client.post(f"{url}/v1/chat/completions", json=b).raise_for_status()
        return time.perf_counter() - t0

    before, start = backend.forward_calls, time.perf_counter()
    with client, cf.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, bodies))
    return summarise(f"server, concurrency {concurrency}", latencies, time.perf_counter() - start,
                     backend.forward_calls - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder (default: a tiny random Idefics3)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    import torch

    from moesaic.backends.registry import load_backend
    from moesaic.serve.app import create_app
    from moesaic.serve.settings import ServeConfig

    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from moesaic.testing import make_tiny_model

            model = str(make_tiny_model("idefics3", Path(tmp) / "tiny-idefics3", seed=SEED))
        backend = load_backend(model)
        bodies = [body(i, "bench", args.max_tokens) for i in range(args.requests)]
        rows = [sequential(backend, bodies)]
        app = create_app(ServeConfig(model=model, served_model_name="bench", max_batch_size=8), backend)
        with running(app) as url:
            served(url, backend, bodies[:2], 2)  # warm-up
            rows += [served(url, backend, bodies, c) for c in args.concurrency]
    print(f"{args.requests} requests, max_tokens={args.max_tokens}, torch threads={torch.get_num_threads()}")
    print(f"{'mode':<26}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'generate calls':>16}{'vs sequential':>15}")
    base = rows[0]["req/s"]
    for r in rows:
        print(f"{r['mode']:<26}{r['req/s']:>8.2f}{r['p50 ms']:>9.0f}{r['p95 ms']:>9.0f}{r['generate calls']:>16}"
              f"{r['req/s'] / base:>14.2f}x")


if __name__ == "__main__":
    main()
