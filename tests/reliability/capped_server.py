"""A ``moesaic serve`` subprocess under an address-space cap (``RLIMIT_AS``, what ``prlimit --as`` sets), for
tests that send inputs which once exhausted memory: if a regression comes back, the server gets a
``MemoryError`` or dies, and the machine running the tests is untouched.

The cap must leave room for the large *virtual* reservations of torch and onnxruntime (about 2-3 GiB before a
byte is used); 8 GiB does, and is far below what the old failures asked for (22 GB resident, 5.7 GiB for one
tensor).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["CAP_BYTES", "CappedServer", "capped_server", "rss_mib"]

CAP_BYTES = 8 * 1024**3
SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of ``pid`` from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


@dataclass
class CappedServer:
    url: str
    proc: subprocess.Popen[str]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> tuple[float, float]:
        return rss_mib(self.proc.pid)


def _cap(limit: int) -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@contextlib.contextmanager
def capped_server(*flags: str, cap_bytes: int = CAP_BYTES, start_timeout_s: float = 240) -> Iterator[CappedServer]:
    """``moesaic serve FLAGS`` on a free loopback port, under ``cap_bytes`` of address space."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "moesaic.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", *flags]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: _cap(cap_bytes))  # noqa: PLW1509 - no threads in the parent here
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the capped server did not answer /ping in time")
            time.sleep(0.3)
        yield CappedServer(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
