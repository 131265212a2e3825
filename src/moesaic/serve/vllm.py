"""``moesaic serve --engine vllm``: hand a natively loadable model folder to vLLM's OpenAI server.

Merged MoE VLMs written in a native transformers architecture (Mixtral-text LLaVA/Idefics3, Qwen3-VL-MoE)
load in vLLM without remote code; moesaic's own generic MoE and the starter experts do not.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from moesaic.backends.registry import model_type_of
from moesaic.errors import ConfigError, MissingDependencyError, MoesaicError
from moesaic.serve.settings import ServeConfig, sagemaker_host

__all__ = ["vllm_command", "run_vllm", "NOT_NATIVE"]

log = logging.getLogger(__name__)

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


def vllm_command(config: ServeConfig) -> list[str]:
    """The ``vllm serve`` command line for ``config`` (validated first)."""
    _check_model(config.model)
    cmd = ["vllm", "serve", config.model,
           "--host", sagemaker_host(config), "--port", str(config.port),
           "--served-model-name", config.model_name,
           "--limit-mm-per-prompt", json.dumps({"image": config.max_images}),
           "--dtype", config.dtype]
    if config.quantization == "8bit":
        raise ConfigError("vLLM has no in-flight 8-bit bitsandbytes loading",
                          "use --quantization 4bit with --engine vllm, or --engine moesaic", param="quantization")
    if config.quantization == "4bit":
        cmd += ["--quantization", "bitsandbytes"]  # vLLM's in-flight 4-bit bitsandbytes loading
    key = config.resolved_api_key()
    if key:
        cmd += ["--api-key", key]
    return cmd + list(config.vllm_args)


def run_vllm(config: ServeConfig) -> None:
    """Run vLLM's server in the foreground; refuse clearly when vLLM is not installed."""
    cmd = vllm_command(config)
    if importlib.util.find_spec("vllm") is None:
        raise MissingDependencyError("vllm is not installed, so --engine vllm cannot run",
                                     "install it on a CUDA machine with: pip install vllm (or use --engine moesaic)")
    if shutil.which("vllm") is None:
        cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", *cmd[1:]]
    shown = [("***" if i and cmd[i - 1] == "--api-key" else part) for i, part in enumerate(cmd)]
    log.info("running: %s", " ".join(shown))
    code = subprocess.call(cmd)
    if code != 0:
        raise MoesaicError(f"vllm serve exited with status {code}", "read vLLM's output above for the cause")
