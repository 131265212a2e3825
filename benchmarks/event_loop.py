"""Event-loop hygiene: ``/ping`` latency while a client sends bodies that are cheap to send and costly to parse.

Starts ``moesaic serve`` (starter experts, under the same address-space cap as memory_budget.py), pings it
every 10 ms from a *separate process* (so the measuring client shares no interpreter with the sender), first
idle, then while this process sends ``--floods`` bodies of 600 000 empty messages (19.8 MB) one after another.

    python benchmarks/event_loop.py
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

import httpx
from memory_budget import _start

PINGER = r"""
import sys, time, httpx
url, secs = sys.argv[1], float(sys.argv[2]); lat = []
with httpx.Client() as c:
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.perf_counter(); c.get(url + "/ping"); lat.append(time.perf_counter() - t); time.sleep(0.01)
lat.sort()
print(f"| {len(lat)} | {lat[len(lat) // 2] * 1000:.1f} | {lat[int(len(lat) * 0.99)] * 1000:.1f} | {lat[-1] * 1000:.1f} |")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floods", type=int, default=3)
    parser.add_argument("--messages", type=int, default=600_000)
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = _start("starter", port, ["--max-body-bytes", str(30 * 1024 * 1024)])
    flood = json.dumps({"model": "bench", "messages": [{"role": "user", "content": ""}] * args.messages}).encode()
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        print("| phase | pings | median ms | p99 ms | max ms |\n|---|---|---|---|---|")
        idle = subprocess.run([sys.executable, "-c", PINGER, url, "3"], capture_output=True, text=True).stdout
        print("| idle " + idle.strip())
        pinger = subprocess.Popen([sys.executable, "-c", PINGER, url, str(3 * args.floods + 2)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        answers = []
        for _ in range(args.floods):
            started = time.perf_counter()
            r = httpx.post(f"{url}/v1/chat/completions", content=flood, timeout=120)
            answers.append(f"{r.status_code} in {time.perf_counter() - started:.2f} s")
        print(f"| {args.floods} floods " + pinger.communicate()[0].strip())
        print(f"\nfloods of {len(flood)} bytes answered: {', '.join(answers)}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
