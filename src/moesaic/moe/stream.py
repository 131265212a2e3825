"""The streaming merge: the output is written tensor by tensor, never holding N models.

After mergekit's tensor-by-tensor writer. Base and expert checkpoints are read lazily through
safetensors (``safe_open``, one tensor per read, the file closed again); each output tensor is planned
(name, shape, dtype) from the files' headers, then produced, written and dropped
(:mod:`moesaic.moe.safetensors_writer`). Only ``hidden``/``hidden_avg`` gates load a model — the base,
once, to read its hidden states — and it is freed before writing starts.

Non-MLP tensors keep the base's on-disk names (so a host class that loaded the base loads them the same
way); each sparse layer's router and experts take the names the output family's own ``save_pretrained``
writes (``OutputArchitecture.router_key`` / ``expert_keys``). :func:`stream_merge` returns ``None`` when a
checkpoint cannot be streamed (no safetensors, an ambiguous layer layout, a family without the hooks); the
caller then builds the model in memory.
"""

from __future__ import annotations

import gc
import logging
import re
import shutil
from pathlib import Path
import torch

from moesaic.errors import ConfigError
from moesaic.moe.arch import MoEPlan, OutputArchitecture
from moesaic.moe.config import PROMPT_GATE_MODES, MergeConfig
from moesaic.moe.gates import compute_gates
from moesaic.moe.modelinfo import sparse_layer_indices
from moesaic.moe.safetensors_writer import PlannedTensor, write_shards

__all__ = ["Checkpoint", "stream_merge", "text_layer_prefix"]

log = logging.getLogger(__name__)

_MLP_KEY = re.compile(r"^(?P<prefix>.+)\.(?P<i>\d+)\.mlp\.(?P<kind>gate_proj|gate_up_proj)\.weight$")
_SKIP_FILES = ("config.json", "model.safetensors.index.json")


class Checkpoint:
    """The safetensors files of a model folder, read one tensor at a time."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.folder = folder
        self.file_of: dict[str, Path] = {}
        self.meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for path in sorted(folder.glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    view = f.get_slice(key)
                    self.file_of[key] = path
                    self.meta[key] = (tuple(view.get_shape()), _DTYPES[view.get_dtype()])

    def __contains__(self, key: str) -> bool:
        return key in self.file_of

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.file_of[key]), framework="pt") as f:
            return f.get_tensor(key)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def text_layer_prefix(ckpt: Checkpoint, num_layers: int) -> str | None:
    """The on-disk prefix of the language model's decoder layers (e.g. ``language_model.model.layers``):
    the one prefix with a gated MLP in exactly layers 0..num_layers-1 (vision towers and Idefics2's
    perceiver use other counts or names); None when that is not unique."""
    seen: dict[str, set[int]] = {}
    for key in ckpt.file_of:
        m = _MLP_KEY.match(key)
        if m:
            seen.setdefault(m["prefix"], set()).add(int(m["i"]))
    found = [p for p, idx in seen.items() if idx == set(range(num_layers))]
    if len(found) > 1:
        found = [p for p in found if "language_model" in p or "text_model" in p or p == "model.layers"]
    return found[0] if len(found) == 1 else None


def _expert_part(ckpt: Checkpoint, layer: str, part: int) -> torch.Tensor:
    """One weight of a layer's dense MLP: 0 gate (I, H), 1 up (I, H), 2 down (H, I); fused gate_up split."""
    if part == 2:
        return ckpt.get(f"{layer}.mlp.down_proj.weight")
    if f"{layer}.mlp.gate_up_proj.weight" in ckpt:
        return ckpt.get(f"{layer}.mlp.gate_up_proj.weight").chunk(2, dim=0)[part].clone()  # (2I, H) -> (I, H)
    return ckpt.get(f"{layer}.mlp.{('gate_proj', 'up_proj')[part]}.weight")


def _gates(config: MergeConfig, num_layers: int, hidden: int) -> list[torch.Tensor]:
    if config.gate_mode not in PROMPT_GATE_MODES:
        return compute_gates(None, None, config.experts, config.gate_mode, num_layers, hidden, config.seed,
                             config.degenerate_threshold)
    from moesaic.moe.loading import load_dense, load_processor, torch_dtype

    base = load_dense(config.base_model, torch_dtype(config.dtype))
    if config.shared_weights == "average":  # the gates read the model as it will be: averaged shared weights
        _average_shared_into(base, config)
    processor = load_processor(config.base_model)
    if processor is None:
        raise ConfigError(f"{config.base_model} has no processor or tokenizer", "save one with the base model")
    gates = compute_gates(base, processor, config.experts, config.gate_mode, num_layers, hidden, config.seed,
                          config.degenerate_threshold)
    del base
    gc.collect()
    return gates


def _average_shared_into(base: torch.nn.Module, config: MergeConfig) -> None:
    """Load the experts' mean non-MLP weights into ``base`` (one expert model in memory at a time)."""
    from moesaic.moe.layers import find_decoder_layers
    from moesaic.moe.loading import load_dense

    layers = find_decoder_layers(base)
    mlp = tuple(f"{layers.path}.{i}.mlp." for i in range(len(layers)))
    base_sd = base.state_dict()
    acc: dict[str, torch.Tensor] = {}
    for spec in config.experts:
        expert = load_dense(spec.source_model, next(base.parameters()).dtype)
        for key, value in expert.state_dict().items():
            if key in base_sd and not key.startswith(mlp) and value.is_floating_point():
                acc[key] = acc.get(key, torch.zeros_like(value, dtype=torch.float32)) + value.float()
        del expert
    n = len(config.experts)
    base.load_state_dict({k: (v / n).to(base_sd[k].dtype) for k, v in acc.items()}, strict=False)


def _plan_tensors(config: MergeConfig, arch: OutputArchitecture, base: Checkpoint, experts: list[Checkpoint],
                  prefix: str, gates: list[torch.Tensor], out_dtype: torch.dtype,
                  intermediate: int) -> list[PlannedTensor]:
    n_layers = len(gates)
    mlp = tuple(f"{prefix}.{i}.mlp." for i in range(n_layers))
    planned = []
    for key in sorted(base.file_of):
        if key.startswith(mlp):
            continue
        shape, dtype = base.meta[key]
        dtype = out_dtype if dtype.is_floating_point else dtype
        if config.shared_weights == "average" and dtype.is_floating_point:
            def produce(key: str = key) -> torch.Tensor:  # the experts' mean, accumulated in float32
                acc = experts[0].get(key).float()
                for ckpt in experts[1:]:
                    acc += ckpt.get(key).float()
                return acc / len(experts)
        else:
            def produce(key: str = key) -> torch.Tensor:
                return base.get(key)
        planned.append(PlannedTensor(key, shape, dtype, produce))
    hidden = int(gates[0].shape[1])
    for i, gate in enumerate(gates):
        layer = f"{prefix}.{i}"
        planned.append(PlannedTensor(arch.router_key(layer), tuple(gate.shape), out_dtype, lambda g=gate: g))  # (E, H)
        for e, ckpt in enumerate(experts):
            names = arch.expert_keys(layer, e)
            for part, name in enumerate(names):  # 0 gate (I, H), 1 up (I, H), 2 down (H, I)
                shape = (hidden, intermediate) if part == 2 else (intermediate, hidden)
                planned.append(PlannedTensor(name, shape, out_dtype,
                                             lambda c=ckpt, layer=layer, part=part: _expert_part(c, layer, part)))
        for name, value in arch.extra_tensors(layer, hidden).items():
            planned.append(PlannedTensor(name, tuple(value.shape), out_dtype, lambda v=value: v))
    return planned


def stream_merge(config: MergeConfig, arch: OutputArchitecture, folder: Path) -> MoEPlan | None:
    """Write the merged model into ``folder`` tensor by tensor; None when these checkpoints cannot stream."""
    from transformers import AutoConfig

    base_dir = Path(config.base_model)
    dirs = [base_dir, *(Path(s.source_model) for s in config.experts)]
    if not arch.streams or not all(d.is_dir() and any(d.glob("*.safetensors")) for d in dirs):
        return None
    base_config = AutoConfig.from_pretrained(base_dir)
    text = base_config.get_text_config()
    n_layers = int(text.num_hidden_layers)
    if len(sparse_layer_indices(base_config.to_dict(), n_layers)) != n_layers:
        return None
    base = Checkpoint(base_dir)
    prefix = text_layer_prefix(base, n_layers)
    experts = [Checkpoint(d) for d in dirs[1:]]
    if prefix is None or any(text_layer_prefix(c, n_layers) != prefix for c in experts):
        log.info("cannot find one decoder-layer layout in the checkpoints; building the MoE in memory")
        return None
    gate_key = next(k for k in (f"{prefix}.0.mlp.gate_proj.weight", f"{prefix}.0.mlp.gate_up_proj.weight") if k in base)
    shape, dtype = base.meta[gate_key]
    intermediate = shape[0] // (2 if gate_key.endswith("gate_up_proj.weight") else 1)
    hidden = int(text.hidden_size)
    from moesaic.moe.loading import torch_dtype

    out_dtype = torch_dtype(config.dtype) or dtype
    gates = _gates(config, n_layers, hidden)
    plan = MoEPlan(num_experts=len(experts), top_k=config.experts_per_token, gates=gates, experts=[],
                   labels=[s.label for s in config.experts], intermediate=intermediate)
    planned = _plan_tensors(config, arch, base, experts, prefix, gates, out_dtype, intermediate)
    write_shards(folder, planned)
    out_config = arch.output_config(base_config, plan)
    out_config.dtype = out_dtype
    out_config.save_pretrained(folder)
    _copy_side_files(base_dir, folder)
    return plan


def _copy_side_files(src: Path, dst: Path) -> None:
    """Processor, tokenizer, chat template and generation config files of the base, copied as they are."""
    for f in src.iterdir():
        if f.is_file() and f.name not in _SKIP_FILES and f.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
            if not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)
