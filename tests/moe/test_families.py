"""Every output family on a tiny host: merge with ``output_architecture: auto`` → load with plain
transformers (native families) → forcing every router to expert j gives expert j's logits → copies of
the base give the base's logits → a save/load round trip keeps the logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from moe_helpers import token_ids

from moesaic.moe.config import MergeConfig
from moesaic.moe.layers import find_decoder_layers
from moesaic.moe.loading import load_dense
from moesaic.moe.merge import merge
from moesaic.moe.modelinfo import read_config, sparse_layer_indices
from moesaic.moe.routing import load_moe, routers, save_moe

# case -> (tiny factory, family, architecture auto picks, class of the output's text model / causal LM, loader)
CASES = {
    "idefics2": ("vlm", "idefics2", "mixtral", "MixtralModel", "AutoModelForImageTextToText"),
    "mistral3": ("vlm", "mistral3", "mixtral", "MixtralModel", "AutoModelForImageTextToText"),
    "llava_onevision": ("vlm", "llava_onevision", "qwen2_moe", "Qwen2MoeModel", "AutoModelForImageTextToText"),
    "internvl": ("vlm", "internvl", "qwen2_moe", "Qwen2MoeModel", "AutoModelForImageTextToText"),
    "text_qwen2": ("text", "qwen2", "qwen2_moe", "Qwen2MoeForCausalLM", "AutoModelForCausalLM"),
    "text_mistral": ("text", "mistral", "mixtral", "MixtralForCausalLM", "AutoModelForCausalLM"),
    "qwen3_5": ("vlm", "qwen3_5", "qwen3_5_moe", "Qwen3_5MoeTextModel", "AutoModelForImageTextToText"),
    "mllama": ("vlm", "mllama", "generic", "MllamaTextModel", "moesaic.load"),
    "text_phi3": ("text", "phi3", "generic", "Phi3ForCausalLM", "moesaic.load"),
    "text_glm": ("text", "glm", "generic", "GlmForCausalLM", "moesaic.load"),
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``family_dirs(case) -> (base, [expert1, expert2, expert3])``: experts differ only in the MLPs that
    become sparse (Mllama's cross-attention layers keep the base's MLP)."""
    from moesaic.testing import copy_processor, make_tiny_model, make_tiny_text_model

    cache: dict[str, tuple[Path, list[Path]]] = {}

    def get(case: str) -> tuple[Path, list[Path]]:
        if case not in cache:
            kind, family = CASES[case][:2]
            root = tmp_path_factory.mktemp(case)
            base = (make_tiny_model if kind == "vlm" else make_tiny_text_model)(family, root / "base", seed=0)
            experts = []
            for seed in (1, 2, 3):
                model = load_dense(str(base))
                mlps = find_decoder_layers(model).mlps()
                gen = torch.Generator().manual_seed(seed)
                with torch.no_grad():
                    for i in sparse_layer_indices(read_config(str(base)), len(mlps)):
                        for p in mlps[i].parameters():
                            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
                model.save_pretrained(root / f"e{seed}")
                copy_processor(base, root / f"e{seed}")
                experts.append(root / f"e{seed}")
            cache[case] = (base, experts)
        return cache[case]

    return get


def _config(base: Path, experts: list[Path], out: Path, **kw: object) -> MergeConfig:
    prompts = ["a photo of a cat on a red mat", "how many cars? two cars", "the answer is yes. 0 1 2 3"]
    specs = [{"source_model": str(e), "name": f"e{i}", "positive_prompts": [prompts[i]]} for i, e in enumerate(experts)]
    return MergeConfig(base_model=str(base), experts=specs, out=str(out), **kw)  # type: ignore[arg-type]


@torch.no_grad()
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # (batch, seq, vocab)


def _plain_load(folder: Path, loader: str) -> torch.nn.Module:
    """What a user without moesaic does: the transformers auto class (native) — else moesaic.load."""
    if loader == "moesaic.load":
        return load_moe(folder)[0]
    import transformers

    return getattr(transformers, loader).from_pretrained(folder).eval()


def _text_model_name(model: torch.nn.Module) -> str:
    inner = getattr(model, "model", None)
    text = getattr(inner, "language_model", None) or getattr(inner, "text_model", None)
    return type(text if text is not None else model).__name__


@pytest.mark.parametrize("case", list(CASES))
def test_family_merges_loads_and_routes(case, family_dirs, tmp_path) -> None:
    _, _, arch, text_cls, loader = CASES[case]
    base, experts = family_dirs(case)
    out = tmp_path / "moe"
    result = merge(_config(base, experts, out, gate_mode="uniform", experts_per_token=1))
    assert (result.architecture, result.load_with) == (arch, loader)
    assert loader in result.render()
    moe = _plain_load(out, loader)
    assert _text_model_name(moe) == text_cls
    gates = routers(moe)
    n_layers = len(find_decoder_layers(moe))
    assert len(gates) == (n_layers - 1 if case == "mllama" else n_layers)  # Mllama's cross-attention layer stays dense
    ids = token_ids(1)
    dense = [_logits(load_dense(str(e)), ids) for e in experts]
    assert (dense[0] - dense[1]).abs().max() > 1e-2  # the experts really differ
    for j, want in enumerate(dense):
        def force(_m, _a, out, j=j):  # type: ignore[no-untyped-def]
            return out[0], torch.ones_like(out[1]), torch.full_like(out[2], j)

        handles = [g.register_forward_hook(force) for g in gates]
        torch.testing.assert_close(_logits(moe, ids), want, atol=1e-5, rtol=1e-4)
        for h in handles:
            h.remove()
    save_moe(moe, None, tmp_path / "again")  # round trip through the format it came in
    again = _plain_load(tmp_path / "again", loader)
    torch.testing.assert_close(_logits(again, ids), _logits(moe, ids), atol=0, rtol=0)


@pytest.mark.parametrize("case", ["idefics2", "internvl", "mllama", "text_phi3"])
def test_family_copies_of_the_base_give_the_base(case, family_dirs, tmp_path) -> None:
    base, _ = family_dirs(case)
    merge(_config(base, [base] * 3, tmp_path / "moe", gate_mode="hidden", experts_per_token=2))
    moe = _plain_load(tmp_path / "moe", CASES[case][4])
    ids = token_ids()
    torch.testing.assert_close(_logits(moe, ids), _logits(load_dense(str(base)), ids), atol=1e-5, rtol=1e-4)
