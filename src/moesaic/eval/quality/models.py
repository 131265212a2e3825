"""The models of the quality study: the tiny base, one MLP-only expert per domain, the averaged merge.

The base is a tiny random Idefics3 briefly pre-trained (every text weight, vision tower frozen) on
domain-neutral captions of all the domains' images (:func:`.domains.write_captions`): a random
transformer's token states say little about their context, so without this stand-in for a real base's
pre-training no per-token router can tell the domains apart. ``pretrain_steps=0`` skips it.

Experts change only the decoder's text MLPs — the part a merge turns into experts — so the MoE keeps
exactly what each expert learnt, and the averaged merge averages exactly that. The fine-tuning goes
through ``moesaic finetune``: ``gate_proj``/``up_proj`` are trained in full (PEFT ``modules_to_save``) and
``down_proj`` through a LoRA that ``export-adapter`` merges into the weights; nothing else is trainable.
"""

from __future__ import annotations

import logging
from pathlib import Path

from moesaic.atomic import atomic_dir
from moesaic.errors import ConfigError
from moesaic.eval.quality.config import QualityStudyConfig
from moesaic.finetune.config import ExportAdapterConfig, FinetuneConfig, LoraSettings
from moesaic.finetune.export import export_adapter
from moesaic.finetune.model import load_model, load_processor, save_processor
from moesaic.finetune.train import FinetuneResult, finetune

__all__ = ["build_base", "pretrain_base", "train_expert", "average_models", "MLP_FULL", "MLP_LORA"]

log = logging.getLogger(__name__)

MLP_FULL = ["gate_proj", "up_proj"]  # Llama MLP projections trained in full
MLP_LORA = ["down_proj"]  # trained through a LoRA (PEFT needs one target), merged on export


def build_base(config: QualityStudyConfig, folder: Path) -> Path:
    """The tiny random Idefics3 base (Llama text model) with the study's sizes, saved to ``folder``."""
    from moesaic.testing import make_tiny_model

    if (folder / "config.json").is_file():
        return folder
    with atomic_dir(folder) as tmp:
        make_tiny_model("idefics3", tmp, seed=config.seed, hidden_size=config.hidden_size,
                        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                        initializer_range=config.init_range)
    return folder


def pretrain_base(config: QualityStudyConfig, random_base: Path, data: Path, run_dir: Path) -> Path:
    """Full fine-tuning (text model only) of the random base on the caption rows; returns the model folder."""
    done = run_dir / "model"
    if (done / "config.json").is_file():
        return done
    ft = FinetuneConfig(base_model=str(random_base), data=str(data), output_dir=str(run_dir), method="full",
                        freeze_vision=True, lr=config.pretrain_lr, max_steps=config.pretrain_steps,
                        batch_size=config.batch_size, scheduler="constant", eval_fraction=0.0,
                        eval_generate=False, seed=config.seed, resume=False)
    result = finetune(ft)
    log.info("pre-trained the base for %d steps: loss %s → %s", result.steps, result.first_loss, result.final_loss)
    return Path(result.saved_to)


def train_expert(config: QualityStudyConfig, base: Path, data: Path, run_dir: Path, out: Path) -> FinetuneResult:
    """Fine-tune the base's text MLPs on one domain's rows; the merged full model goes to ``out``."""
    lora = LoraSettings(rank=config.lora_rank, alpha=2.0 * config.lora_rank, target_modules=MLP_LORA,
                        modules_to_save=MLP_FULL)
    ft = FinetuneConfig(base_model=str(base), data=str(data), output_dir=str(run_dir), method="lora", lora=lora,
                        lr=config.lr, max_steps=config.steps, batch_size=config.batch_size, scheduler="constant",
                        eval_fraction=0.0, eval_generate=False, seed=config.seed, resume=False)
    result = finetune(ft)
    export = export_adapter(ExportAdapterConfig(adapter=str(run_dir), output=str(out), base_model=str(base)))
    log.info("expert %s: %d LoRA modules merged, probe logit diff %s", out.name, export.merged_modules,
             export.max_logit_diff)
    return result


def average_models(models: list[Path], out: Path) -> Path:
    """Plain weight averaging: every floating-point tensor is the mean of the models' tensors."""
    import torch

    if not models:
        raise ConfigError("no models to average", "give at least one expert folder")
    first = load_model(models[0])
    total = {k: v.detach().double().clone() for k, v in first.state_dict().items() if v.is_floating_point()}
    for path in models[1:]:
        state = load_model(path).state_dict()
        for key in total:
            if state[key].shape != total[key].shape:
                raise ConfigError(f"{path}: tensor {key} has shape {tuple(state[key].shape)}, "
                                  f"not {tuple(total[key].shape)}", "average only fine-tunes of one base model")
            total[key] += state[key].double()
    with torch.no_grad():
        first.load_state_dict({k: (v / len(models)).float() for k, v in total.items()}, strict=False)
    with atomic_dir(out) as tmp:
        first.save_pretrained(tmp)
        save_processor(load_processor(models[0]), tmp)
    return out
