"""Serving throughput and latency: ``moesaic serve`` (dynamic batching) against ``transformers serve
--continuous-batching`` and against sequential in-process calls, same model and same requests, same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_throughput.py --requests 16 --max-tokens 8
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_throughput.py --model tiny --requests 16
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_throughput.py --model path/to/model --no-peer

``--model smolvlm-256m`` (the default) builds a random-weight Idefics3 with SmolVLM-256M-Instruct's shapes
(SmolLM2-135M text model: hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocab 49280; SigLIP
base-patch16-512 vision tower: hidden 768, 12 layers, 12 heads, MLP 3072; pixel-shuffle scale factor 4, so
64 image tokens per 512 px tile) with the offline byte-level tokenizer of :mod:`moesaic.testing` and one
512 px tile per image (no splitting). ``--text-layers`` / ``--vision-layers`` shrink it when the machine is
too slow. ``--model tiny`` is the tiny test Idefics3 (serving overhead only).

Each request is one 640×480 JPEG (data URL, a different one per request) and a short question; greedy,
``max_tokens`` new tokens. Modes:

* ``sequential``: the backend called in-process, one request after another (no HTTP): the baseline. Half
  the requests run before the servers' runs and half after, so it sees the same background load.
* ``moesaic serve``: a subprocess on loopback, ``--max-batch-size 8``; N client threads keep N requests in flight.
* ``transformers serve --continuous-batching``: the peer, a subprocess on the same model folder.

Both servers run at once (each idle while the other is measured), with the same environment
(``OMP_NUM_THREADS`` from the caller, ``HF_HUB_OFFLINE=1``) and two warm-up requests each; for each
concurrency level both are measured back to back, in alternating order. With random weights the answers
are noise; the token column shows both servers generated the same number of tokens.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import gc
import io
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

SEED = 0


# ----- the model -----
def smolvlm_shaped(path: Path, *, text_layers: int = 30, vision_layers: int = 12, seed: int = SEED) -> Path:
    """Save a random Idefics3 with SmolVLM-256M's shapes (layers adjustable) and a 512 px processor."""
    import torch
    from transformers import AutoModelForImageTextToText, Idefics3Config, Idefics3ImageProcessorPil, Idefics3Processor

    from moesaic.testing import tiny_processor

    tok = tiny_processor("idefics3").tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<image>", "<|endoftext|>", "<|im_start|>", "<end_of_utterance>")}
    pad, bos, eos = ids["<|endoftext|>"], ids["<|im_start|>"], ids["<end_of_utterance>"]
    text = {"model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": text_layers, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "pad_token_id": pad,
            "bos_token_id": bos, "eos_token_id": eos, "tie_word_embeddings": False}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": vision_layers,
              "num_attention_heads": 12, "image_size": 512, "patch_size": 16}
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=4, image_token_id=ids["<image>"],
                            tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id, gen.do_sample = pad, bos, eos, False
    model.save_pretrained(path)
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 512},
                                       max_image_size={"longest_edge": 512})
    # (512 / 16)^2 = 1024 patches, pixel-shuffled by scale factor 4 -> 64 image tokens
    Idefics3Processor(images, tok, image_seq_len=64, chat_template=tiny_processor("idefics3").chat_template
                      ).save_pretrained(path)
    return path


def build_model(name: str, workdir: Path, text_layers: int, vision_layers: int) -> str:
    if name == "smolvlm-256m":
        return str(smolvlm_shaped(workdir / "smolvlm-256m-random", text_layers=text_layers,
                                  vision_layers=vision_layers))
    if name == "tiny":
        from moesaic.testing import make_tiny_model

        return str(make_tiny_model("idefics3", workdir / "tiny-idefics3", seed=SEED))
    return name


# ----- requests -----
def jpeg_url(i: int, size: tuple[int, int] = (640, 480)) -> str:
    rng = np.random.default_rng(SEED + i)
    y, x = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)  # (height, width) each
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    rgb = base + 60 * np.stack([np.sin(x / (20 + i)), np.cos(y / (15 + i)), np.sin((x + y) / 40)], axis=-1)
    rgb += rng.normal(0, 8, size=rgb.shape).astype(np.float32)  # (height, width, 3)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def body(i: int, model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": jpeg_url(i)}}, {"type": "text", "text": f"What is in image {i}?"}]}]}


def summarise(name: str, latencies: list[float], wall: float, tokens: int, cpu_s: float,
              extra: str = "") -> dict[str, Any]:
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return {"mode": name, "req/s": len(lat) / wall, "p50 ms": 1000 * statistics.median(lat), "p95 ms": 1000 * p95,
            "tokens": tokens, "cpu s/req": cpu_s / len(lat), "note": extra, "load": os.getloadavg()[0]}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sequential:
    """The baseline: the backend in this process, one request after another, no HTTP. Timed in parts (one
    before the servers' runs, one after) so that it sees the same background load as they do."""

    def __init__(self, model: str) -> None:
        from moesaic.backends.base import GenerationParams
        from moesaic.backends.registry import load_backend

        self.backend = load_backend(model)
        self.params: Any = GenerationParams
        self.latencies: list[float] = []
        self.wall = 0.0
        self.tokens = 0
        self.cpu_s = 0.0

    def run(self, bodies: list[dict[str, Any]]) -> None:
        from moesaic.inputs.messages import ChatMessage, resolve_messages

        params = self.params(max_new_tokens=bodies[0]["max_tokens"])
        start_t, start_cpu = time.perf_counter(), time.process_time()
        for b in bodies:
            t0 = time.perf_counter()
            turns = resolve_messages([ChatMessage.model_validate(m) for m in b["messages"]])
            self.tokens += self.backend.generate(turns, params).completion_tokens
            self.latencies.append(time.perf_counter() - t0)
        self.wall += time.perf_counter() - start_t
        self.cpu_s += time.process_time() - start_cpu

    def row(self) -> dict[str, Any]:
        row = summarise("sequential, in-process", self.latencies, self.wall, self.tokens, self.cpu_s)
        self.backend.close()
        gc.collect()
        return row


# ----- servers -----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, model: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0"}
    env.setdefault("OMP_NUM_THREADS", "1")
    if kind == "moesaic":
        args = [sys.executable, "-m", "moesaic.cli", "serve", "--model", model, "--served-model-name", "bench",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--max-batch-size", "8",
                "--device", "cpu"]
    else:
        exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
        args = [exe, "serve", model, "--continuous-batching", "--device", "cpu", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def batch_stats(url: str) -> tuple[float, float]:
    """(generate calls, requests batched) from moesaic's Prometheus ``moesaic_batch_size`` histogram."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    count = re.search(r"^moesaic_batch_size_count (\S+)$", text, re.M)
    total = re.search(r"^moesaic_batch_size_sum (\S+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def load(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[list[float], float, int]:
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency))

    def one(b: dict[str, Any]) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = client.post(f"{url}/v1/chat/completions", json=b)
        r.raise_for_status()
        return time.perf_counter() - t0, int(r.json()["usage"]["completion_tokens"])

    start_t = time.perf_counter()
    with client, cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, bodies))
    return [r[0] for r in results], time.perf_counter() - start_t, sum(r[1] for r in results)


class Server:
    """One server subprocess on a free loopback port, warmed up, measured level by level."""

    def __init__(self, kind: str, model: str, workdir: Path) -> None:
        self.kind, self.log = kind, workdir / f"{kind}.log"
        self.name = "bench" if kind == "moesaic" else model
        self.label = "moesaic serve" if kind == "moesaic" else "transformers serve --cb"
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = start(kind, model, port, self.log)

    def ready(self, bodies: list[dict[str, Any]]) -> None:
        wait_ready(self.proc, f"{self.url}/ping" if self.kind == "moesaic" else f"{self.url}/health", self.log)
        load(self.url, [{**b, "model": self.name} for b in bodies[:2]], 2)  # warm-up

    def measure(self, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
        before = batch_stats(self.url) if self.kind == "moesaic" else (0.0, 0.0)
        cpu = process_cpu_s(self.proc.pid)
        latencies, wall, tokens = load(self.url, [{**b, "model": self.name} for b in bodies], concurrency)
        cpu = process_cpu_s(self.proc.pid) - cpu
        note = ""
        if self.kind == "moesaic":
            after = batch_stats(self.url)
            calls, batched = after[0] - before[0], after[1] - before[1]
            note = f"{int(calls)} generate calls, mean batch {batched / max(calls, 1):.1f}"
        return summarise(f"{self.label}, concurrency {concurrency}", latencies, wall, tokens, cpu, note)

    def close(self) -> str:
        """Stop the server; for the peer, what its log says about continuous batching."""
        stop(self.proc)
        text = self.log.read_text(errors="replace")
        if self.kind != "peer":
            return ""
        cb = re.findall(r"CB: (True|False)", text)
        fallback = "does not support continuous batching" in text
        return f"CB used: {cb[-1] if cb else '?'}" + ("; fell back to sequential generate" if fallback else "")


def run_all(model: str, bodies: list[dict[str, Any]], levels: list[int], peer: bool, workdir: Path) -> list[dict]:
    """Baseline half, then each level on each server (order alternating per level), then baseline half."""
    baseline = Sequential(model)
    baseline.run(bodies[:1])  # warm-up
    baseline.latencies, baseline.wall, baseline.tokens, baseline.cpu_s = [], 0.0, 0, 0.0
    baseline.run(bodies[: len(bodies) // 2])
    servers = [Server("moesaic", model, workdir)] + ([Server("peer", model, workdir)] if peer else [])
    rows: list[dict[str, Any]] = []
    try:
        for server in servers:
            server.ready(bodies)
        for i, c in enumerate(levels):
            for server in servers if i % 2 == 0 else servers[::-1]:
                rows.append(server.measure(bodies, c))
                print(f"measured: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        notes = {s.label: s.close() for s in servers}
    for r in rows:
        r["note"] = r["note"] or notes.get(r["mode"].rsplit(",", 1)[0], "")
    baseline.run(bodies[len(bodies) // 2:])
    return [baseline.row(), *sorted(rows, key=lambda r: r["mode"].startswith("transformers"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smolvlm-256m", help="smolvlm-256m (random), tiny, or a model folder")
    parser.add_argument("--text-layers", type=int, default=30)
    parser.add_argument("--vision-layers", type=int, default=12)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--no-peer", action="store_true", help="skip transformers serve")
    args = parser.parse_args()

    import torch
    import transformers

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the servers (finally)
    torch.manual_seed(SEED)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.model, Path(tmp), args.text_layers, args.vision_layers)
        bodies = [body(i, "bench", args.max_tokens) for i in range(args.requests)]
        rows = run_all(model, bodies, args.concurrency, not args.no_peer, Path(tmp))
    shape = ""
    if args.model == "smolvlm-256m":
        shape = f" (text layers {args.text_layers}, vision layers {args.vision_layers})"
    print(f"{started}; model {args.model}{shape};"
          f" {args.requests} requests, max_tokens={args.max_tokens}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}")
    print("| mode | req/s | p50 ms | p95 ms | tokens | CPU s/req | vs sequential | vs peer | load | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = rows[0]["req/s"]
    peers = {r["mode"].rsplit(" ", 1)[-1]: r["req/s"] for r in rows if r["mode"].startswith("transformers")}
    for r in rows:
        level = r["mode"].rsplit(" ", 1)[-1]
        vs_peer = f"{r['req/s'] / peers[level]:.2f}x" if r["mode"].startswith("moesaic") and level in peers else ""
        print(f"| {r['mode']} | {r['req/s']:.3f} | {r['p50 ms']:.0f} | {r['p95 ms']:.0f} | {r['tokens']} | "
              f"{r['cpu s/req']:.3f} | "
              f"{r['req/s'] / base:.2f}x | {vs_peer} | {r['load']:.1f} | {r['note']} |")


if __name__ == "__main__":
    main()
