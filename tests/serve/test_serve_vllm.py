"""``--engine vllm``: the child's command line, its key in the environment, start/failure/stop paths.

vLLM is not installed here (it needs its own environment); the process handling is exercised with a
stand-in ``vllm`` executable (:data:`moesaic.testing.engines.FAKE_VLLM`: a small OpenAI-compatible engine that
demands the key from ``$VLLM_API_KEY``). Whether real vLLM serves a model is checked on a GPU by
``benchmarks/vllm_gpu_check.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from moesaic.errors import ConfigError, MissingDependencyError, MoesaicError
from moesaic.serve.app import serve
from moesaic.serve.settings import ServeConfig
from moesaic.serve.vllm import vllm_command
from moesaic.testing.engines import FAKE_VLLM, free_port


def native_folder(tmp_path, model_type: str = "llava", **extra: object):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, **extra}))
    return folder


def test_command_line_for_a_native_folder(tmp_path):
    folder = native_folder(tmp_path)
    cfg = ServeConfig(model=str(folder), engine="vllm", port=9001, max_images=2, api_key="k",
                      served_model_name="moe", dtype="bfloat16", vllm_args=["--max-model-len", "4096"])
    assert vllm_command(cfg, 41234) == [
        "vllm", "serve", str(folder), "--host", "127.0.0.1", "--port", "41234", "--served-model-name", str(folder),
        "--limit-mm-per-prompt", '{"image": 2}', "--dtype", "bfloat16", "--max-model-len", "4096",
    ]  # private loopback port; no key on the command line


def test_the_child_stays_on_loopback_inside_sagemaker(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    cmd = vllm_command(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm"), 5000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


@pytest.mark.parametrize("model", ["starter", "moesaic-generic"])
def test_models_vllm_cannot_load_are_refused(tmp_path, model):
    target = "starter" if model == "starter" else str(
        native_folder(tmp_path, "moesaic_generic_moe", moesaic={"kind": "moesaic_generic_moe"}))
    with pytest.raises(ConfigError) as info:
        vllm_command(ServeConfig(model=target, engine="vllm"), 5000)
    assert "vLLM cannot serve" in info.value.message and "--engine moesaic" in str(info.value)


def test_folder_without_config_and_upstream_with_engine_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        vllm_command(ServeConfig(model=str(tmp_path), engine="vllm"), 5000)
    with pytest.raises(ConfigError, match="give one of them"):
        vllm_command(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm", upstream="http://x:1"), 5000)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None or shutil.which("vllm") is not None,
                    reason="vllm is installed here")
def test_missing_vllm_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDependencyError) as info:
        serve(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm"))
    assert info.value.status == 501 and "pip install vllm" in str(info.value)


def fake_vllm(tmp_path, env: dict[str, str]) -> dict[str, str]:
    """PATH with the stand-in `vllm` first; returns the environment to run under."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "vllm"
    script.write_text(f"#!{sys.executable}\n{FAKE_VLLM}")
    script.chmod(0o755)
    return {**env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_VLLM_RECORD": str(tmp_path / "rec.json")}


def test_a_child_that_fails_to_start_is_reported(tmp_path, monkeypatch):
    for key, value in fake_vllm(tmp_path, {"FAKE_VLLM_EXIT": "3"}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(MoesaicError, match="exited with status 3 while starting"):
        serve(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm", port=free_port()))


def test_a_child_that_dies_stops_the_server(tmp_path, monkeypatch):
    for key, value in fake_vllm(tmp_path, {"FAKE_VLLM_DIE_S": "3"}).items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    with pytest.raises(MoesaicError, match="engine exited with status 5, so the server stopped"):
        serve(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm", port=free_port(), log_level="warning"))
    assert time.monotonic() - started < 60


def test_engine_vllm_fronts_the_child_and_sigterm_stops_both(tmp_path):
    folder = native_folder(tmp_path)
    port = free_port()
    env = fake_vllm(tmp_path, {**os.environ, "MOESAIC_API_KEY": "client-key", "OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen([sys.executable, "-m", "moesaic.cli", "serve", "--engine", "vllm", "--model", str(folder),
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /ping in time"
            time.sleep(0.3)
        record = json.loads((tmp_path / "rec.json").read_text())
        assert record["key"] and record["key"] not in " ".join(record["argv"])  # in the environment only
        assert "--api-key" not in record["argv"] and "client-key" not in json.dumps(record)
        r = httpx.post(f"{base}/invocations", json={"question": "hi"}, headers={"Authorization": "Bearer client-key"})
        assert r.status_code == 200 and r.json()["answer"] == "answered by the child"
        assert httpx.post(f"{base}/invocations", json={"question": "hi"}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert (tmp_path / "rec.json.stopped").read_text() == "stopped by SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
