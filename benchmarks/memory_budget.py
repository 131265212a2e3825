"""Memory under the worst case: concurrent requests of four max-size images each against ``moesaic serve``.

Before the memory budget, 12 such requests (313 KB each: four 4096² PNGs) took the server from 0.9 to 5.3 GB.
This starts ``moesaic serve`` (under an address-space cap, so a regression cannot take the machine down), sends
``--requests`` of them at once, ``--rounds`` times, samples the server's resident memory every 20 ms, and prints
the answers by status, the peak RSS and the limits the server reports on ``/health``.

    python benchmarks/memory_budget.py                                   # tiny VLM, the server's defaults
    python benchmarks/memory_budget.py --serve-args "--max-rss-mib 2500 --max-pixels-in-flight 67108864"

Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import io
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

CAP_BYTES = 8 * 1024**3


@dataclass
class BudgetReport:
    requests: int
    side: int
    statuses: Counter = field(default_factory=Counter)
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    limits: dict = field(default_factory=dict)
    good_after: bool = False
    alive: bool = False
    seconds: float = 0.0

    def row(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"| {self.requests} × 4 × {self.side}² | {codes} | {self.rss_start_mib:.0f} | {self.rss_peak_mib:.0f} | "
                f"{self.limits.get('max_rss_mib')} | {self.limits.get('max_pixels_in_flight')} | "
                f"{'yes' if self.alive and self.good_after else 'NO'} | {self.seconds:.1f} |")


HEADER = ("| worst case (requests × images × pixels) | answers by status | RSS start MiB | RSS peak MiB | "
          "ceiling MiB | pixel budget | alive + good request after | s |\n|---|---|---|---|---|---|---|---|")


def image_url(side: int, seed: int) -> str:
    """A ``side``² PNG that compresses well (a few shapes on a flat colour), as a data URL."""
    img = Image.new("RGB", (side, side), (seed * 40 % 256, 90, 150))
    draw = ImageDraw.Draw(img)
    for i in range(8):
        x, y = i * side // 9, i * side // 11
        draw.rectangle((x, y, x + side // 4, y + side // 4), fill=(i * 30, 200, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(model: str, port: int, serve_args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0"}
    env.setdefault("OMP_NUM_THREADS", "1")
    args = [sys.executable, "-m", "moesaic.cli", "serve", "--model", model, "--served-model-name", "bench",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *serve_args]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES)))


def run_budget(model: str, requests: int = 12, side: int = 4096, rounds: int = 2,
               serve_args: list[str] | None = None) -> BudgetReport:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    report = BudgetReport(requests=requests * rounds, side=side)
    proc = _start(model, port, list(serve_args or []))
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)
        small = {"model": "bench", "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url(64, 1)}}, {"type": "text", "text": "hi"}]}]}
        assert httpx.post(f"{base}/v1/chat/completions", json=small, timeout=120).status_code == 200
        report.rss_start_mib = _rss_mib(proc.pid)
        urls = [image_url(side, i) for i in range(4)]
        body = {"model": "bench", "max_tokens": 2, "messages": [{"role": "user", "content": [
            *({"type": "image_url", "image_url": {"url": u}} for u in urls), {"type": "text", "text": "hi"}]}]}
        stop, peak = threading.Event(), [report.rss_start_mib]

        def sample() -> None:
            while not stop.is_set() and proc.poll() is None:
                peak[0] = max(peak[0], _rss_mib(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with httpx.Client(timeout=300) as client, cf.ThreadPoolExecutor(requests) as pool:
            for _ in range(rounds):
                for status in pool.map(lambda _: client.post(f"{base}/v1/chat/completions", json=body).status_code,
                                       range(requests)):
                    report.statuses[status] += 1
        report.seconds = time.monotonic() - started
        stop.set()
        sampler.join()
        report.rss_peak_mib = peak[0]
        report.alive = proc.poll() is None
        if report.alive:
            report.good_after = httpx.post(f"{base}/v1/chat/completions", json=small, timeout=120).status_code == 200
            report.limits = httpx.get(f"{base}/health", timeout=10).json().get("memory", {})
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (a random tiny Idefics3 built here), 'starter' or a folder")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-args", default="", help="extra `moesaic serve` flags, e.g. '--max-rss-mib 2500'")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "tiny":
            from moesaic.testing import make_tiny_model

            model = str(make_tiny_model("idefics3", Path(tmp) / "tiny", seed=0))
        report = run_budget(model, args.requests, args.side, args.rounds, shlex.split(args.serve_args))
    print(HEADER)
    print(report.row())
    return 0 if report.alive and report.good_after else 1


if __name__ == "__main__":
    raise SystemExit(main())
