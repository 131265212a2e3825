"""mergekit-moe parity: the same recipe through ``mergekit-moe`` 0.1.5 and ``moesaic merge`` gives the same
expert and shared tensors (gates are computed differently by design and are compared elsewhere).

Llama and Mistral experts: one YAML, both tools. Qwen2 experts: mergekit's ``qwen`` output requires
exactly one ``shared_experts`` entry, which moesaic's config does not take (the routing issue adds shared
experts), so mergekit gets the YAML plus a shared expert and the routed experts are compared."""

from __future__ import annotations

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
    compared = [k for k in b if k in a and "gate.weight" not in k and "shared_expert" not in k]
    experts_keys = [k for k in compared if ".experts." in k]
    assert len(experts_keys) == 3 * 3 * 2  # 3 experts x (gate, up, down) x 2 layers, under the same names
    assert all(k in a for k in b if ".experts." in k)
    for key in compared:
        assert torch.equal(a[key], b[key]), key
