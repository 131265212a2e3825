"""The experimental vLLM plugin without vLLM: its entry point, registration and text-config mapping.

vLLM is not installed in this environment; ``register()`` is exercised against a recording stand-in of
``vllm.ModelRegistry``, and the model module is checked by parsing it (importing it needs vLLM). Whether vLLM
then serves such a merge is checked on a GPU by ``benchmarks/vllm_gpu_check.py``.
"""

from __future__ import annotations

import ast
import sys
import tomllib
import types
from pathlib import Path

import pytest

from moesaic.errors import UnsupportedArchitectureError
from moesaic.vllm_plugin import REPLACED, TEXT_MODELS, register, text_model_target

ROOT = Path(__file__).resolve().parents[1]


def test_entry_point_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["vllm.general_plugins"] == {"moesaic": "moesaic.vllm_plugin:register"}


def test_replacement_classes_exist_where_registered():
    for target in REPLACED.values():
        module, name = target.split(":")
        source = ROOT / "src" / (module.replace(".", "/") + ".py")
        classes = {n.name: n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ClassDef)}
        bases = [ast.unparse(b) for b in classes[name].bases]
        assert bases[0] == "_TextFromConfig" and bases[1] in REPLACED  # vLLM's class is the second base


def test_register_replaces_idefics3_and_smolvlm(monkeypatch):
    calls: list[tuple[str, str]] = []
    fake = types.ModuleType("vllm")
    fake.ModelRegistry = types.SimpleNamespace(register_model=lambda arch, target: calls.append((arch, target)))
    monkeypatch.setitem(sys.modules, "vllm", fake)
    register()
    assert calls == list(REPLACED.items())
    assert "moesaic.vllm_plugin.idefics3" not in sys.modules  # lazy: nothing heavy imported at registration
    calls.clear()
    monkeypatch.setenv("MOESAIC_VLLM_PLUGIN", "0")
    register()
    assert calls == []


def test_text_model_comes_from_text_config():
    from transformers import Idefics3Config

    text = {"model_type": "mixtral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 2}
    merged = Idefics3Config(text_config=text)
    assert text_model_target(merged.text_config) == ("vllm.model_executor.models.mixtral", "MixtralModel")
    assert text_model_target(Idefics3Config().text_config) == TEXT_MODELS["llama"]  # dense: what vLLM builds
    assert text_model_target({"model_type": "qwen3_moe"})[1] == "Qwen3MoeModel"
    with pytest.raises(UnsupportedArchitectureError, match="'gemma'"):
        text_model_target({"model_type": "gemma"})
