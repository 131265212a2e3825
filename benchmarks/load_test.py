"""Load test: N concurrent clients for D seconds against a real ``moesaic serve`` subprocess on loopback.

For each model it starts ``moesaic serve`` on a free 127.0.0.1 port, warms it up, then runs ``--clients``
threads that send chat completions (a small PNG + a question, every fourth one streamed) until
``--duration`` seconds have passed, and stops by itself. It records requests, errors (any non-200, any
stream without ``[DONE]``, any transport error), latency percentiles, throughput, and the server's resident
memory (``VmRSS`` from ``/proc/PID/status``) after warm-up (every question once, plain and streamed) and
at the end, plus its peak (``VmHWM``).

    python benchmarks/load_test.py                                  # 16 clients × 300 s, starter + tiny-vlm
    python benchmarks/load_test.py --duration 30 --model tiny-vlm   # the short version

``--model`` is ``starter`` (the offline starter experts), ``tiny-vlm`` (a tiny random Idefics3 built in a
temporary folder: exercises the HF backend and batching, not model quality) or a local model folder.
Loopback only: the server binds 127.0.0.1 and the clients never leave the machine.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from PIL import Image

__all__ = ["LoadReport", "run_load", "main"]

QUESTIONS = ["What is in this image?", "What colour is it?", "Describe it briefly.", "Is there any text?"]


@dataclass
class LoadReport:
    model: str
    clients: int
    duration_s: float
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests_per_s: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_peak_mib: float = 0.0
    server_exit_code: int | None = None
    rss_samples_mib: list[float] = field(default_factory=list)  # VmRSS every tenth of the run

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_start_mib

    @property
    def rss_growth_pct(self) -> float:
        return 100.0 * self.rss_growth_mib / self.rss_start_mib if self.rss_start_mib else 0.0

    def row(self) -> str:
        return (f"| {self.model} | {self.clients} | {self.duration_s:.0f} | {self.requests} | {self.errors} | "
                f"{self.requests_per_s:.1f} | {self.p50_ms:.0f} | {self.p90_ms:.0f} | {self.p99_ms:.0f} | "
                f"{self.max_ms:.0f} | {self.rss_start_mib:.0f} | {self.rss_end_mib:.0f} | "
                f"{self.rss_growth_mib:+.0f} ({self.rss_growth_pct:+.1f} %) | {self.rss_peak_mib:.0f} |")


HEADER = ("| model | clients | s | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | RSS start MiB | "
          "RSS end MiB | RSS growth MiB | RSS peak MiB |\n|" + "---|" * 14)


def proc_memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, read from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB → MiB
    return values["VmRSS"], values["VmHWM"]


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png_data_url(rng: random.Random) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), tuple(rng.randrange(256) for _ in range(3))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0"}
    env.setdefault("OMP_NUM_THREADS", "1")
    args = [sys.executable, "-m", "moesaic.cli", "serve", "--model", model, "--served-model-name", "bench",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(proc: subprocess.Popen[str], base: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not answer /ping in time")
        time.sleep(0.3)


def one_request(client: httpx.Client, base: str, rng: random.Random, max_tokens: int,
                question: str | None = None, stream: bool | None = None) -> str | None:
    """Send one request (random question and mode unless given); ``None`` when it succeeded, else what went
    wrong."""
    stream = rng.random() < 0.25 if stream is None else stream
    body = {"model": "bench", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _png_data_url(rng)}},
        {"type": "text", "text": question or rng.choice(QUESTIONS)}]}]}
    url = f"{base}/v1/chat/completions"
    if not stream:
        r = client.post(url, json=body)
        return None if r.status_code == 200 and r.json()["choices"] else f"HTTP {r.status_code}: {r.text[:200]}"
    with client.stream("POST", url, json=body) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    if r.status_code != 200 or not lines or lines[-1] != "data: [DONE]" or '"error"' in "".join(lines[-2:]):
        return f"stream HTTP {r.status_code}: {(lines or [''])[-2:]}"
    return None


def _client_loop(base: str, seed: int, until: float, max_tokens: int, out: dict[str, list]) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                problem = one_request(client, base, rng, max_tokens)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            out["latency_ms"].append((time.perf_counter() - started) * 1000)
            if problem:
                out["errors"].append(problem)


def warm_up(base: str, max_tokens: int, seed: int) -> None:
    """Every question once, plain and streamed: every expert the router can pick (the starter's OCR, tagger,
    writer …) is loaded before the starting RSS is read, so growth measures leaks, not lazy loading."""
    rng = random.Random(seed)
    with httpx.Client(timeout=300) as client:
        for question in QUESTIONS:
            for stream in (False, True):
                problem = one_request(client, base, rng, max_tokens, question, stream)
                if problem:
                    raise RuntimeError(f"the warm-up request failed: {problem}")


def run_load(model: str, clients: int = 16, duration_s: float = 300, *, max_tokens: int = 8, seed: int = 0,
             server_args: list[str] | None = None) -> LoadReport:
    """Start ``moesaic serve --model MODEL`` on loopback, load it for ``duration_s``, stop it, report."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(model, port, list(server_args or []))
    report = LoadReport(model=model, clients=clients, duration_s=duration_s)
    try:
        wait_ready(proc, base)
        warm_up(base, max_tokens, seed)
        report.rss_start_mib, _ = proc_memory_mib(proc.pid)
        out: dict[str, list] = {"latency_ms": [], "errors": []}
        until = time.monotonic() + duration_s
        started = time.monotonic()
        threads = [threading.Thread(target=_client_loop, args=(base, seed + 1 + i, until, max_tokens, out))
                   for i in range(clients)]
        for t in threads:
            t.start()
        step = max(duration_s / 10, 0.5)
        next_sample = started + step
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            if time.monotonic() >= next_sample:  # RSS every tenth of the run: a plateau or a slope
                report.rss_samples_mib.append(round(proc_memory_mib(proc.pid)[0], 1))
                next_sample += step
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        report.rss_end_mib, report.rss_peak_mib = proc_memory_mib(proc.pid)
        lat = sorted(out["latency_ms"])
        report.requests, report.errors = len(lat), len(out["errors"])
        report.error_samples = out["errors"][:5]
        report.p50_ms, report.p90_ms, report.p99_ms = (percentile(lat, q) for q in (0.5, 0.9, 0.99))
        report.max_ms = lat[-1] if lat else 0.0
        report.requests_per_s = len(lat) / elapsed if elapsed > 0 else 0.0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        report.server_exit_code = proc.returncode
    return report


def resolve_model(name: str, workdir: Path) -> str:
    if name != "tiny-vlm":
        return name
    from moesaic.testing import make_tiny_model

    return str(make_tiny_model("idefics3", workdir / "tiny-vlm", seed=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="starter, tiny-vlm or a model folder (repeatable; "
                        "default: starter and tiny-vlm)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load per model")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    args = parser.parse_args(argv)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model or ["starter", "tiny-vlm"]:
            model = resolve_model(name, Path(tmp))
            report = run_load(model, args.clients, args.duration, max_tokens=args.max_tokens, seed=args.seed)
            report.model = name
            reports.append(report)
    print(HEADER)
    for report in reports:
        print(report.row())
    for report in reports:
        for sample in report.error_samples:
            print(f"{report.model}: error: {sample}")
        print(f"{report.model}: server exit code after SIGTERM: {report.server_exit_code}; "
              f"RSS during the run (MiB): {report.rss_samples_mib}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"rss_growth_mib": r.rss_growth_mib,
                                                       "rss_growth_pct": r.rss_growth_pct} for r in reports], indent=2))
    return 0 if all(r.errors == 0 and r.server_exit_code == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
