"""mergekit-moe parity: the same recipe through ``mergekit-moe`` 0.1.5 and ``moesaic merge`` gives the same
expert weights and shared (non-MLP) tensors; gates are computed differently by design (the routing issue
compares them). mergekit writes Mixtral experts fused, moesaic per expert (as save_pretrained does);
both load in transformers 5, and the test compares the weights, not the layouts.

Llama and Mistral experts: one YAML, both tools. Qwen2 experts: mergekit's ``qwen`` output requires
exactly one ``shared_experts`` entry, which moesaic's config does not take (the routing issue adds shared
experts), so mergekit gets the YAML plus a shared expert and the routed experts are compared."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from moesaic.moe.config import MergeConfig
from moesaic.moe.loading import load_dense
from moesaic.moe.merge import merge

pytest.importorskip("mergekit")
pytestmark = pytest.mark.slow  # mergekit-moe's import and start-up take tens of seconds on 2 cores


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


_PER_EXPERT = re.compile(r"layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.weight$")
_FUSED = re.compile(r"layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_PART = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}


def _expert_weights(tensors: dict[str, torch.Tensor]) -> dict[tuple[int, int, str], torch.Tensor]:
    """(layer, expert, gate|up|down) -> weight, from either on-disk layout: per expert (Mixtral's w1/w3/w2,
    Qwen2-MoE's gate/up/down_proj, as transformers' save_pretrained writes) or fused (E, 2I, H) / (E, H, I)
    (what mergekit 0.1.5 writes for Mixtral)."""
    out = {}
    for key, value in tensors.items():
        if m := _PER_EXPERT.search(key):
            out[(int(m[1]), int(m[2]), _PART[m[3]])] = value
        elif m := _FUSED.search(key):
            for e, w in enumerate(value):
                if m[2] == "down_proj":
                    out[(int(m[1]), e, "down")] = w
                else:
                    gate, up = w.chunk(2, dim=0)
                    out[(int(m[1]), e, "gate")], out[(int(m[1]), e, "up")] = gate, up
    return out


def _experts(base: Path, root: Path) -> list[Path]:
    from moesaic.moe.layers import find_decoder_layers
    from moesaic.testing import copy_processor

    paths = []
    for seed in (1, 2, 3):
        model = load_dense(str(base))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for mlp in find_decoder_layers(model).mlps():
                for p in mlp.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        model.save_pretrained(root / f"e{seed}")
        copy_processor(base, root / f"e{seed}")
        paths.append(root / f"e{seed}")
    return paths


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
def test_expert_tensors_match_mergekit_moe(model_type, tmp_path) -> None:
    from moesaic.testing import make_tiny_text_model

    base = make_tiny_text_model(model_type, tmp_path / "base")
    experts = _experts(base, tmp_path)
    recipe = {"base_model": str(base), "gate_mode": "hidden", "dtype": "float32", "experts_per_token": 2,
              "experts": [{"source_model": str(e), "positive_prompts": [p]}
                          for e, p in zip(experts, ["a photo of a cat", "how many cars?", "the answer is yes"])]}
    ours = tmp_path / "moesaic"
    result = merge(MergeConfig(**recipe, out=str(ours)))
    assert result.streamed and result.architecture == ("qwen2_moe" if model_type == "qwen2" else "mixtral")
    theirs_recipe = dict(recipe)
    if model_type == "qwen2":
        theirs_recipe["shared_experts"] = [{"source_model": str(base), "positive_prompts": ["hello"]}]
    (tmp_path / "mk.yaml").write_text(yaml.safe_dump(theirs_recipe))
    theirs = tmp_path / "mergekit"
    cli = shutil.which("mergekit-moe", path=str(Path(sys.executable).parent)) or "mergekit-moe"
    subprocess.run([cli, str(tmp_path / "mk.yaml"), str(theirs), "--device", "cpu", "--quiet"], check=True,
                   capture_output=True, timeout=600)
    a, b = _tensors(ours), _tensors(theirs)
    ea, eb = _expert_weights(a), _expert_weights(b)
    assert len(ea) == 2 * 3 * 3 and ea.keys() == eb.keys()  # 2 layers x 3 experts x (gate, up, down)
    for key, value in ea.items():
        assert torch.equal(value, eb[key]), key
    shared = [k for k in b if k in a and ".mlp." not in k and "block_sparse_moe" not in k]
    assert any("self_attn" in k for k in shared) and any("embed_tokens" in k for k in shared)
    for key in shared:
        assert torch.equal(a[key], b[key]), key
