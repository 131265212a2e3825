"""``--engine vllm``: the command line handed to vLLM, and clear refusals."""

from __future__ import annotations

import importlib.util
import json

import pytest

from moesaic.errors import ConfigError, MissingDependencyError
from moesaic.serve.app import serve
from moesaic.serve.settings import ServeConfig
from moesaic.serve.vllm import vllm_command


def native_folder(tmp_path, model_type: str = "llava", **extra: object):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, **extra}))
    return folder


def test_command_line_for_a_native_folder(tmp_path):
    folder = native_folder(tmp_path)
    cfg = ServeConfig(model=str(folder), engine="vllm", port=9001, max_images=2, api_key="k",
                      served_model_name="moe", dtype="bfloat16", vllm_args=["--max-model-len", "4096"])
    assert vllm_command(cfg) == [
        "vllm", "serve", str(folder), "--host", "127.0.0.1", "--port", "9001", "--served-model-name", "moe",
        "--limit-mm-per-prompt", '{"image": 2}', "--dtype", "bfloat16", "--api-key", "k",
        "--max-model-len", "4096",
    ]


def test_sagemaker_environment_binds_every_interface(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    cmd = vllm_command(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm"))
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8080"


@pytest.mark.parametrize("model", ["starter", "moesaic-generic"])
def test_models_vllm_cannot_load_are_refused(tmp_path, model):
    target = "starter" if model == "starter" else str(
        native_folder(tmp_path, "moesaic_generic_moe", moesaic={"kind": "moesaic_generic_moe"}))
    with pytest.raises(ConfigError) as info:
        vllm_command(ServeConfig(model=target, engine="vllm"))
    assert "vLLM cannot serve" in info.value.message and "--engine moesaic" in str(info.value)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        vllm_command(ServeConfig(model=str(tmp_path), engine="vllm"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDependencyError) as info:
        serve(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm"))
    assert info.value.status == 501 and "pip install vllm" in str(info.value)


def fake_vllm(tmp_path, monkeypatch, exit_code: int):
    """A stand-in `vllm` executable on PATH that records its arguments (vLLM itself needs CUDA)."""
    import os

    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "vllm"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv.txt"\nexit {exit_code}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("moesaic.serve.vllm.importlib.util.find_spec", lambda name: object())
    return tmp_path / "argv.txt"


def test_serve_runs_vllm_in_the_foreground(tmp_path, monkeypatch):
    argv = fake_vllm(tmp_path, monkeypatch, exit_code=0)
    folder = native_folder(tmp_path)
    assert serve(ServeConfig(model=str(folder), engine="vllm", port=8123)) is None
    assert argv.read_text().splitlines()[:2] == ["serve", str(folder)]
    assert "8123" in argv.read_text().splitlines()


def test_vllm_failure_is_reported(tmp_path, monkeypatch):
    from moesaic.errors import MoesaicError

    fake_vllm(tmp_path, monkeypatch, exit_code=3)
    with pytest.raises(MoesaicError, match="exited with status 3"):
        serve(ServeConfig(model=str(native_folder(tmp_path)), engine="vllm"))
