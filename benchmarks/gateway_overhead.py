"""What the gateway costs: ``moesaic serve --upstream`` in front of ``transformers serve`` vs calling
``transformers serve`` directly, same model, same requests, same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gateway_overhead.py --requests 120

The engine is ``transformers serve`` on the tiny test Idefics3 (32 px images; ``max_tokens`` 1, so the engine's
own time is small and the gateway's share shows). Both servers are subprocesses on loopback; their CPU time
is read from ``/proc/PID/stat`` (user + system) around each measured block, so the load generator's own CPU
is not counted. Per request kind and concurrency (client threads with keep-alive connections), direct and
gateway blocks alternate (direct, gateway, direct, gateway; half the requests each) after warm-up.

Request kinds: ``text`` (a short question), ``photo`` (skimage's 512×512 astronaut JPEG as base64) and
``12mp`` (the same photo scaled to 4000×3000, JPEG q90). Through the gateway an image arrives at the engine
as a PNG already shrunk to the model's 32 px; sent directly, the engine decodes and resizes the original.

Columns: ``gateway CPU ms/req`` = gateway process CPU / requests; ``engine CPU ms/req`` direct and via the
gateway; p50/p95 latency direct and via the gateway and their differences (added latency).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime (fields 14, 15 of stat)


def photos() -> dict[str, str]:
    from PIL import Image
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    out = {}
    for name, image in (("photo", astronaut), ("12mp", astronaut.resize((4000, 3000), Image.Resampling.BICUBIC))):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out[name] = base64.b64encode(buf.getvalue()).decode()
    return out


def body(kind: str, model: str, images: dict[str, str]) -> dict[str, object]:
    content: list[dict[str, object]] = [{"type": "text", "text": "What is in the picture?"}]
    if kind != "text":
        content.insert(0, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + images[kind]}})
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1, "temperature": 0}


def run_block(url: str, payload: bytes, n: int, concurrency: int) -> list[float]:
    import httpx

    def worker(count: int) -> list[float]:
        times = []
        with httpx.Client(timeout=120, trust_env=False) as client:
            for _ in range(count):
                t0 = time.perf_counter()
                r = client.post(url, content=payload, headers={"content-type": "application/json"})
                times.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
        return times

    shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    with cf.ThreadPoolExecutor(concurrency) as pool:
        return [t for part in pool.map(worker, shares) for t in part]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def start_gateway(upstream: str, model: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from moesaic.testing.engines import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "moesaic.cli", "serve", "--upstream", upstream + "/v1", "--model", model,
           "--port", str(port), "--log-level", "warning", "--max-body-bytes", str(64 * 1024 * 1024),
           "--max-image-bytes", str(32 * 1024 * 1024)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/ping", timeout=2, trust_env=False).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"the gateway did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120, help="per kind, concurrency and path")
    parser.add_argument("--kinds", default="text,photo,12mp")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from moesaic.testing import make_tiny_model
    from moesaic.testing.engines import transformers_serve

    images = photos()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = make_tiny_model("idefics3", Path(tmp) / "tiny", seed=0)
        model = str(folder)
        procs: list[subprocess.Popen[bytes]] = []
        engine = stack.enter_context(transformers_serve(folder, log=Path(tmp) / "engine.log", procs=procs))
        gw_proc, gateway = start_gateway(engine, model, Path(tmp) / "gateway.log")
        stack.callback(lambda: (gw_proc.terminate(), gw_proc.wait(30)))
        e_pid = procs[0].pid
        for kind in args.kinds.split(","):
            payload = json.dumps(body(kind, model, images)).encode()
            for conc in (int(c) for c in args.concurrency.split(",")):
                for url in (engine, gateway):  # warm-up
                    run_block(f"{url}/v1/chat/completions", payload, max(conc, 4), conc)
                lat = {"direct": [], "gateway": []}
                cpu = {"engine_direct": 0.0, "engine_gw": 0.0, "gateway": 0.0}
                half = args.requests // 2
                for _ in range(2):
                    e0 = cpu_s(e_pid)
                    lat["direct"] += run_block(f"{engine}/v1/chat/completions", payload, half, conc)
                    cpu["engine_direct"] += cpu_s(e_pid) - e0
                    e0, g0 = cpu_s(e_pid), cpu_s(gw_proc.pid)
                    lat["gateway"] += run_block(f"{gateway}/v1/chat/completions", payload, half, conc)
                    cpu["engine_gw"] += cpu_s(e_pid) - e0
                    cpu["gateway"] += cpu_s(gw_proc.pid) - g0
                n = 2 * half
                row = {"kind": kind, "concurrency": conc, "requests": n,
                       "gateway_cpu_ms": 1000 * cpu["gateway"] / n,
                       "engine_cpu_ms_direct": 1000 * cpu["engine_direct"] / n,
                       "engine_cpu_ms_via_gateway": 1000 * cpu["engine_gw"] / n,
                       **{f"{p}_{path}_ms": 1000 * pct(lat[path], q) for p, q in (("p50", 50), ("p95", 95))
                          for path in ("direct", "gateway")}}
                row["added_p50_ms"] = row["p50_gateway_ms"] - row["p50_direct_ms"]
                row["added_p95_ms"] = row["p95_gateway_ms"] - row["p95_direct_ms"]
                rows.append(row)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    print(f"\n{platform.node()} {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    head = ("kind", "c", "n", "gateway CPU ms/req", "engine CPU ms/req direct", "engine CPU ms/req via gw",
            "p50 direct", "p50 gw", "added p50", "p95 direct", "p95 gw", "added p95")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["kind"], r["concurrency"], r["requests"], r["gateway_cpu_ms"], r["engine_cpu_ms_direct"],
                 r["engine_cpu_ms_via_gateway"], r["p50_direct_ms"], r["p50_gateway_ms"], r["added_p50_ms"],
                 r["p95_direct_ms"], r["p95_gateway_ms"], r["added_p95_ms"]]
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
