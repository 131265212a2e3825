"""``moesaic merge``: fine-tuned copies of a VLM → one sparse mixture-of-experts VLM.

Recipe (after Cephalo and mergekit-moe): non-MLP weights from the base (or the experts' mean); in every
decoder layer the dense MLP becomes a sparse block holding each expert's MLP and a router initialised by
:mod:`moesaic.moe.gates`. Everything that can be checked from ``config.json`` is checked before a single
weight is loaded. The output is written atomically with the resolved config next to it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from moesaic.atomic import atomic_dir
from moesaic.errors import ConfigError
from moesaic.moe.arch import MoEPlan, OutputArchitecture, select_architecture
from moesaic.moe.config import MergeConfig
from moesaic.moe.gates import compute_gates, degenerate_pairs
from moesaic.moe.layers import ExpertMLP, dense_mlp_weights, find_decoder_layers
from moesaic.moe.loading import load_dense, load_processor, torch_dtype
from moesaic.moe.modelinfo import read_config, shape_mismatches, sparse_layer_indices
from moesaic.progress import progress

__all__ = ["merge", "MergeResult", "validate_merge", "build_moe"]

log = logging.getLogger(__name__)


class MergeResult(BaseModel):
    out: str
    architecture: str
    native: bool
    num_experts: int
    experts_per_token: int
    gate_mode: str
    degenerate_layers: int
    seconds: float
    streamed: bool = False  # written tensor by tensor (moe/stream.py) rather than built in memory
    load_with: str = ""  # how to load the output: "AutoModelForImageTextToText", "AutoModelForCausalLM", "moesaic.load"

    def render(self) -> str:
        how = self.load_with or ("AutoModelForImageTextToText" if self.native else "moesaic.load")
        how = how if how == "moesaic.load" else f"{how}.from_pretrained"
        return (f"wrote {self.architecture} MoE ({self.num_experts} experts, top-{self.experts_per_token}, "
                f"{self.gate_mode} gates) to {self.out} in {self.seconds:.1f}s — load it with {how}")


def load_with(arch: OutputArchitecture, config: dict[str, Any]) -> str:
    """The loader a user calls for a merge of base ``config``: the generative VLM auto class, the causal-LM
    one for text-only models, or ``moesaic.load`` for the generic output."""
    if not arch.native:
        return "moesaic.load"
    vlm = isinstance(config.get("text_config"), dict) or isinstance(config.get("vision_config"), dict)
    return "AutoModelForImageTextToText" if vlm else "AutoModelForCausalLM"


def validate_merge(config: MergeConfig) -> OutputArchitecture:
    """Every check that needs only config.json files and paths; returns the output architecture."""
    base_cfg = read_config(config.base_model)
    problems = []
    for spec in config.experts:
        for mismatch in shape_mismatches(base_cfg, read_config(spec.source_model)):
            problems.append(f"{spec.label}: {mismatch}")
        problems += [f"{spec.label}: image {p} does not exist" for p in spec.positive_images if not Path(p).is_file()]
    if problems:
        raise ConfigError(
            "experts do not match the base model: " + "; ".join(problems),
            "every expert must be a fine-tune of base_model (same architecture and shapes); fix the listed paths",
        )
    return select_architecture(base_cfg, config.output_architecture)


def _expert_mlps(path: str, dtype: torch.dtype, base_sd: dict[str, torch.Tensor], mlp_prefixes: tuple[str, ...],
                 acc: dict[str, torch.Tensor] | None, sparse: list[int]) -> list[ExpertMLP]:
    """Load one expert, keep the MLP weights of its ``sparse`` layers (and add its shared weights into ``acc``)."""
    model = load_dense(path, dtype)
    mlps_all = find_decoder_layers(model).mlps()
    mlps = [tuple(t.clone() for t in dense_mlp_weights(mlps_all[i], f"{path} layer {i}")) for i in sparse]
    if acc is not None:
        for key, value in model.state_dict().items():
            if key in base_sd and not key.startswith(mlp_prefixes):
                acc[key] = acc.get(key, torch.zeros_like(value, dtype=torch.float32)) + value.float()
    del model
    return mlps  # type: ignore[return-value]


def build_moe(config: MergeConfig, arch: OutputArchitecture) -> tuple[nn.Module, Any, MoEPlan]:
    """Load base and experts, compute the gates, and build the MoE model in memory."""
    base = load_dense(config.base_model, torch_dtype(config.dtype))
    dtype = next(base.parameters()).dtype
    processor = load_processor(config.base_model)
    if config.gate_mode in ("hidden", "hidden_avg") and processor is None:
        raise ConfigError(f"{config.base_model} has no processor or tokenizer", "save one with the base model")
    layers = find_decoder_layers(base)
    sparse = sparse_layer_indices(base.config.to_dict(), len(layers))  # type: ignore[union-attr]
    for i in sparse:
        dense_mlp_weights(layers.layers[i].mlp, f"base layer {i} mlp")
    base_sd = base.state_dict()
    mlp_prefixes = tuple(f"{layers.path}.{i}.mlp." for i in sparse)
    acc: dict[str, torch.Tensor] | None = {} if config.shared_weights == "average" else None
    per_expert = [_expert_mlps(s.source_model, dtype, base_sd, mlp_prefixes, acc, sparse)
                  for s in progress(config.experts, desc="loading experts", unit="expert")]
    if acc is not None:
        n = len(config.experts)
        base.load_state_dict({k: (v / n).to(base_sd[k].dtype) for k, v in acc.items()}, strict=False)
    hidden = int(layers.layers[0].post_attention_layernorm.weight.shape[0])
    gates = compute_gates(base, processor, config.experts, config.gate_mode, len(layers), hidden,
                          config.seed, config.degenerate_threshold)
    plan = MoEPlan(
        num_experts=len(config.experts),
        top_k=config.experts_per_token,
        gates=[gates[i] for i in sparse],
        experts=[[per_expert[e][j] for e in range(len(per_expert))] for j in range(len(sparse))],
        labels=[s.label for s in config.experts],
        layers=None if len(sparse) == len(layers) else sparse,
    )
    return arch.build(base, plan), processor, plan


def merge(config: MergeConfig) -> MergeResult:
    """Merge fine-tuned VLMs into one sparse MoE VLM: moesaic merge merge.yaml --out DIR (YAML keys = flags).

    Native families whose checkpoints are local safetensors folders stream the output tensor by tensor
    (:mod:`moesaic.moe.stream`); the others build the MoE in memory and save it."""
    from moesaic.moe.stream import stream_merge

    if not config.out:
        raise ConfigError("no output folder given", "pass --out DIR (or set out: in the YAML)", param="out")
    start = time.perf_counter()
    arch = validate_merge(config)
    log.info("merging %d experts into a %s MoE", len(config.experts), arch.name)
    with atomic_dir(config.out) as tmp:
        plan = stream_merge(config, arch, tmp) if config.streaming else None
        streamed = plan is not None
        if plan is None:
            model, processor, plan = build_moe(config, arch)
            arch.save(model, processor, tmp)
            del model
        config.save(tmp)
    degenerate = {layer for layer, _, _ in degenerate_pairs(plan.gates, plan.labels, config.degenerate_threshold)}
    return MergeResult(
        out=str(config.out), architecture=arch.name, native=arch.native, num_experts=plan.num_experts,
        experts_per_token=plan.top_k, gate_mode=config.gate_mode, degenerate_layers=len(degenerate),
        seconds=time.perf_counter() - start, load_with=load_with(arch, read_config(config.base_model)),
        streamed=streamed,
    )
