"""The models of the real-decoder study: experts from ``moesaic finetune`` + ``export-adapter``, and the merges
(moesaic MoE with hidden gates, plain averaging, TIES and DARE-TIES from mergekit).

Expert settings: ``lora`` is the product's default LoRA on every linear layer (attention and MLP) of the
upper ``upper_layers`` decoder layers; ``mlp`` puts it on the MLP projections of the same layers only.
Both are merged into full weights by ``export-adapter``. The peers are mergekit 0.1.5's own methods
(Yadav et al. 2023, TIES-Merging, arXiv:2306.01708; Yu et al. 2024, DARE, arXiv:2311.03099), called through
its Python API, never re-implemented here. Every builder skips its work when its output folder exists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from moesaic.errors import missing_extra
from moesaic.finetune.config import ExportAdapterConfig, FinetuneConfig, LoraSettings
from moesaic.moe.config import ExpertSpec, MergeConfig

__all__ = ["ExpertSetting", "lora_targets_for", "train_expert", "moe_merge", "mergekit_merge", "num_layers"]

log = logging.getLogger(__name__)

ExpertSetting = Literal["lora", "mlp"]
_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def num_layers(model: Path) -> int:
    return int(json.loads((model / "config.json").read_text())["num_hidden_layers"])


def lora_targets_for(setting: ExpertSetting, layers: int, upper: int) -> list[str]:
    """Module-name suffixes (``layers.27.mlp.up_proj``) of the upper ``upper`` layers for ``setting``."""
    modules = (*_ATTENTION, *_MLP) if setting == "lora" else _MLP
    return [f"layers.{i}.{m}" for i in range(max(0, layers - upper), layers) for m in modules]


def train_expert(base: Path, data: Path, eval_data: Path, run_dir: Path, out: Path, setting: ExpertSetting,
                 cfg: Any) -> dict[str, Any]:
    """``moesaic finetune`` (LoRA) then ``export-adapter``; returns the finetune result (cached in ``out``)."""
    from moesaic.finetune.export import export_adapter
    from moesaic.finetune.train import finetune

    record = out / "finetune_result.json"
    if record.is_file():
        return dict(json.loads(record.read_text()))
    lora = LoraSettings(rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank,
                        target_modules=lora_targets_for(setting, num_layers(base), cfg.upper_layers))
    ft = FinetuneConfig(base_model=str(base), data=str(data), eval_data=str(eval_data), output_dir=str(run_dir),
                        method="lora", lora=lora, lr=cfg.lr, max_steps=cfg.steps, batch_size=cfg.batch_size,
                        scheduler="linear", warmup_steps=min(5, cfg.steps // 10), eval_generate=False,
                        seed=cfg.seed)
    result = finetune(ft)
    export_adapter(ExportAdapterConfig(adapter=str(run_dir), output=str(out), base_model=str(base)))
    from moesaic.atomic import atomic_write_text

    atomic_write_text(record, result.model_dump_json(indent=2))
    return result.model_dump()


def moe_merge(base: Path, experts: dict[str, Path], gate_prompts: dict[str, list[str]], out: Path, k: int,
              seed: int) -> Path:
    """moesaic's MoE: hidden gates from each domain's training prompts, non-MLP weights from the base."""
    from moesaic.moe.merge import merge

    if not (out / "config.json").is_file():
        specs = [ExpertSpec(source_model=str(p), name=d, positive_prompts=gate_prompts[d]) for d, p in experts.items()]
        merge(MergeConfig(base_model=str(base), experts=specs, gate_mode="hidden", experts_per_token=k,
                          shared_weights="base", out=str(out), seed=seed, dtype="float32"))
    return out


def mergekit_merge(method: Literal["ties", "dare_ties"], base: Path, experts: list[Path], out: Path,
                   density: float, seed: int) -> Path:
    """TIES or DARE-TIES through mergekit's Python API (weights 1, normalised; ``density`` kept per expert)."""
    if (out / "config.json").is_file():
        return out
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
    except ImportError:
        raise missing_extra("mergekit", "dev") from None
    spec = {"merge_method": method, "base_model": str(base), "dtype": "float32",
            "parameters": {"normalize": True},
            "models": [{"model": str(p), "parameters": {"density": density, "weight": 1.0}} for p in experts]}
    from moesaic.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        run_merge(MergeConfiguration.model_validate(spec), str(tmp),
                  MergeOptions(random_seed=seed, copy_tokenizer=True, write_model_card=False, quiet=True))
        (tmp / "mergekit_config.json").write_text(json.dumps(spec, indent=2))
    return out
