"""``moesaic serve --engine vllm``: vLLM as a child process on a private loopback port, fronted by the gateway.

The child is ``vllm serve MODEL --host 127.0.0.1 --port <free port>``; moesaic's server (routes, limits,
image policy, API key) listens on ``--port`` and forwards to it (:mod:`moesaic.serve.upstream`). The child's
key is random per start and travels in its environment (``VLLM_API_KEY``), never on a command line (command
lines are visible to every local user in ``ps``). :class:`VllmChild` starts it, waits until ``/health``
answers, notices when it dies, and stops it (SIGTERM, then SIGKILL after a grace period).

Which models vLLM loads is vLLM's business: moesaic's generic MoE and the starter experts are refused here
because they need moesaic's own code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from moesaic.backends.registry import model_type_of
from moesaic.errors import ConfigError, MissingDependencyError, MoesaicError
from moesaic.serve.settings import ServeConfig

__all__ = ["vllm_command", "VllmChild", "NOT_NATIVE", "KEY_ENV"]

log = logging.getLogger(__name__)

KEY_ENV = "VLLM_API_KEY"  # vLLM reads its API key from here when --api-key is not given
NOT_NATIVE = {
    "starter": "the starter experts are not a single transformers model",
    "moesaic_generic_moe": "moesaic's generic MoE needs moesaic's own code to load",
}


def _check_model(model: str) -> None:
    if model in NOT_NATIVE:
        raise ConfigError(f"vLLM cannot serve {model!r}: {NOT_NATIVE[model]}",
                          "serve it with --engine moesaic, or pass a natively loadable model folder", param="model")
    path = Path(model)
    looks_local = path.exists() or model.startswith((".", "/", "~"))
    if not looks_local:
        return  # a hub id: vLLM resolves it
    if not (path / "config.json").is_file():
        raise ConfigError(f"{model} has no config.json", "pass a saved model folder (save_pretrained output)",
                          param="model")
    kind = model_type_of(model)
    if kind in NOT_NATIVE:
        raise ConfigError(f"vLLM cannot serve {model}: {NOT_NATIVE[kind]}",
                          "merge with a native output architecture (mixtral, qwen3_vl_moe) or use --engine moesaic",
                          param="model")


def vllm_command(config: ServeConfig, port: int) -> list[str]:
    """The ``vllm serve`` command line for the child on ``127.0.0.1:port`` (validated first; no key in it)."""
    _check_model(config.model)
    if config.upstream:
        raise ConfigError("--engine vllm starts its own engine; --upstream fronts one that already runs",
                          "give one of them", param="upstream")
    if config.quantization == "8bit":
        raise ConfigError("vLLM has no in-flight 8-bit bitsandbytes loading",
                          "use --quantization 4bit with --engine vllm, or --engine moesaic", param="quantization")
    quantization = ["--quantization", "bitsandbytes"] if config.quantization == "4bit" else []  # in-flight 4-bit
    return ["vllm", "serve", config.model, "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", config.model,
            "--limit-mm-per-prompt", json.dumps({"image": config.max_images}),
            "--dtype", config.dtype, *quantization, *config.vllm_args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _resolve(cmd: list[str]) -> list[str]:
    """``vllm`` on PATH (it may live in its own virtual environment), else this Python's vllm package."""
    if shutil.which("vllm") is not None:
        return cmd
    if importlib.util.find_spec("vllm") is None:
        raise MissingDependencyError("vllm is not installed, so --engine vllm cannot run",
                                     "install it on a CUDA machine with: pip install vllm, or put its `vllm` "
                                     "command on PATH (or use --engine moesaic)")
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", *cmd[1:]]


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Die with the gateway (Linux), even if it is killed without a chance to stop the child."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class VllmChild:
    """A running ``vllm serve`` child: ``url`` (its ``/v1``), ``key``, ``proc``."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, key: str) -> None:
        self.proc, self.url, self.key = proc, url, key

    @classmethod
    @contextlib.contextmanager
    def running(cls, config: ServeConfig, start_timeout_s: float = 900.0,
                stop_timeout_s: float = 30.0) -> Iterator["VllmChild"]:
        """Start vLLM, wait until it is healthy, yield it; stop it on exit (SIGTERM, then SIGKILL)."""
        port = _free_port()
        cmd = _resolve(vllm_command(config, port))
        key = secrets.token_urlsafe(24)
        env = {**os.environ, KEY_ENV: key}
        log.info("starting vLLM on 127.0.0.1:%d: %s", port, " ".join(cmd))
        # its own session: a Ctrl-C in the terminal reaches the gateway only, which drains, then stops vLLM
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=_child_setup if sys.platform.startswith("linux") else None)
        child = cls(proc, f"http://127.0.0.1:{port}/v1", key)
        try:
            child.wait_healthy(start_timeout_s)
            yield child
        finally:
            child.stop(stop_timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        root = self.url[: -len("/v1")]
        while True:
            code = self.proc.poll()
            if code is not None:
                raise MoesaicError(f"vllm serve exited with status {code} while starting",
                                   "read vLLM's output above for the cause (model, memory, CUDA)")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{root}/health", timeout=2.0, trust_env=False).status_code == 200:
                    log.info("vLLM is healthy")
                    return
            if time.monotonic() > deadline:
                raise MoesaicError(f"vllm serve was not healthy within {timeout_s:g} s",
                                   "read vLLM's output above; large models may need a longer start")
            time.sleep(0.5)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # vLLM finishes what it holds and exits
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("vLLM did not stop within %g s after SIGTERM; killing it", timeout_s)
            self.proc.kill()
            self.proc.wait()
