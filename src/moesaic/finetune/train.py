"""``moesaic finetune CONFIG.yaml``: LoRA, QLoRA or full fine-tuning of a VLM on image + chat data.

Steps: validate the data (row-numbered errors) → count tokens with the model's processor and apply the
vision-token budget (report in ``budget_report.json``) → load the model (QLoRA: with a 4-bit base, see
:mod:`moesaic.finetune.quantize`), add LoRA (PEFT) or unfreeze →
train with :mod:`moesaic.finetune.loop` (metrics in ``metrics.jsonl``, checkpoints in ``checkpoints/``,
resumed automatically) → save ``adapter/`` (a PEFT folder) or ``model/`` (full weights), each with the
processor → evaluate on the held-out split (answer loss, greedy exact-match accuracy).

Several GPUs: the loop is built on ``accelerate``, so the same command runs distributed unchanged::

    accelerate launch -m moesaic.cli finetune CONFIG.yaml

(each process takes its slice of every global batch of ``batch_size x processes`` samples; rank 0 writes
checkpoints — with every process's RNG state — logs and outputs). Several CPU processes (what the test suite
checks): ``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m moesaic.cli finetune CONFIG.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moesaic.atomic import atomic_dir, atomic_write_text
from moesaic.errors import missing_extra
from moesaic.finetune.budget import BudgetReport, prepare
from moesaic.finetune.config import FinetuneConfig
from moesaic.finetune.data import Sample, load_samples
from moesaic.finetune.encode import Encoded
from moesaic.finetune.evaluate import accuracy, eval_loss, generate_answers
from moesaic.finetune.loop import plan_steps, train_loop
from moesaic.finetune.model import apply_method, image_token_id, load_model, load_processor, save_processor

__all__ = ["FinetuneResult", "finetune", "split_samples"]

log = logging.getLogger(__name__)


class FinetuneResult(BaseModel):
    output_dir: str
    method: str
    saved_to: str
    steps: int
    train_samples: int
    eval_samples: int
    trainable_params: int
    total_params: int
    first_loss: float | None
    final_loss: float | None
    eval_loss_before: float | None
    eval_loss: float | None
    eval_accuracy_before: float | None
    eval_accuracy: float | None
    resumed_from: str | None
    seconds: float
    budget: BudgetReport

    def render(self) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"
        return "\n".join([
            f"{self.method} fine-tuning: {self.steps} steps on {self.train_samples} samples "
            f"({self.trainable_params:,} of {self.total_params:,} parameters trained) in {self.seconds:.1f}s",
            f"train loss {f(self.first_loss)} → {f(self.final_loss)}",
            f"eval loss {f(self.eval_loss_before)} → {f(self.eval_loss)}; "
            f"eval accuracy {f(self.eval_accuracy_before)} → {f(self.eval_accuracy)} ({self.eval_samples} samples)",
            f"saved to {self.saved_to}" + (f" (resumed from {self.resumed_from})" if self.resumed_from else ""),
            "budget: " + self.budget.render(),
        ])


def split_samples(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic held-out split (by seed); at least one training sample stays."""
    import random

    n_eval = min(int(round(len(samples) * fraction)), len(samples) - 1)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def _data(config: FinetuneConfig) -> tuple[list[Sample], list[Sample]]:
    samples = load_samples(config.data, config.image_root)
    if config.eval_data is not None:
        return samples, load_samples(config.eval_data, config.image_root)
    return split_samples(samples, config.eval_fraction, config.seed)


def _evaluate(model: Any, processor: Any, items: list[tuple[Sample, Encoded]],
              config: FinetuneConfig) -> tuple[float | None, float | None]:
    loss = eval_loss(model, processor, items)
    if not config.eval_generate or not items:
        return loss, None
    samples = [s for s, _ in items]
    return loss, accuracy(generate_answers(model, processor, samples, config.max_new_tokens), samples)


def _model(config: FinetuneConfig, device: Any, processor: Any, eval_items: list[tuple[Sample, Encoded]],
           quant: Any = None) -> tuple[Any, tuple[float | None, float | None]]:
    """The base model evaluated as-is (the 'before' numbers), then made trainable (LoRA, QLoRA or full)."""
    from accelerate.utils import set_seed

    set_seed(config.seed)
    if quant is not None:  # method: qlora
        from moesaic.finetune.quantize import load_quantized, prepare_for_training

        model = load_quantized(config.base_model, quant, device)
        before = _evaluate(model, processor, eval_items, config) if eval_items else (None, None)
        return apply_method(prepare_for_training(model, quant.gradient_checkpointing), "lora", config.lora,
                            config.freeze_vision), before
    model = load_model(config.base_model).to(device)
    before = _evaluate(model, processor, eval_items, config) if eval_items else (None, None)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # LoRA: frozen embeddings must still pass gradients on
    return apply_method(model, config.method, config.lora, config.freeze_vision), before


def _optimizer(model: Any, config: FinetuneConfig, total_steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_steps)
    return optimizer, scheduler


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """LoRA or full fine-tuning of a VLM; resumes from the latest checkpoint in output_dir."""
    try:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
    except ImportError:
        raise missing_extra("accelerate", "finetune") from None
    t0 = time.perf_counter()
    train_rows, eval_rows = _data(config)  # validated before any weights load
    processor = load_processor(config.base_model)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    tid = image_token_id(processor, config.base_model)
    train_items, report = prepare(processor, train_rows, config.budget, tid)  # budget errors before weights load
    eval_items, _ = prepare(processor, eval_rows, config.budget, tid)
    log.info("vision-token budget:\n%s", report.render())
    out = Path(config.output_dir)
    quant = _quantization(config, accelerator.device)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
        atomic_write_text(out / "budget_report.json", report.model_dump_json(indent=2))
        _write_schema(out, train_rows + eval_rows)
    model, before = _model(config, accelerator.device, processor, eval_items, quant)
    if quant is not None and accelerator.is_main_process:
        from moesaic.finetune.quantize import write_settings

        write_settings(out, quant)  # resolved: the dtype 'auto' became, what stayed in full precision
    plan = plan_steps(len(train_items), config, accelerator.num_processes)
    optimizer, scheduler = _optimizer(model, config, plan.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    set_seed(config.seed, device_specific=True)  # one dropout stream per process (seed + rank)
    state, losses, resumed = train_loop(accelerator, model, optimizer, scheduler, processor, train_items, config)
    raw = accelerator.unwrap_model(model)
    saved = _save_outputs(accelerator, raw, processor, config, quant)
    after = _evaluate(raw, processor, eval_items, config) if eval_items else (None, None)
    all_losses = _logged_losses(out / "metrics.jsonl") or losses
    result = FinetuneResult(
        output_dir=str(out), method=config.method, saved_to=str(saved), steps=state.step,
        train_samples=len(train_items), eval_samples=len(eval_items),
        trainable_params=sum(p.numel() for p in raw.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in raw.parameters()),
        first_loss=all_losses[0] if all_losses else None, final_loss=all_losses[-1] if all_losses else None,
        eval_loss_before=before[0], eval_loss=after[0], eval_accuracy_before=before[1], eval_accuracy=after[1],
        resumed_from=str(resumed) if resumed else None, seconds=time.perf_counter() - t0, budget=report)
    if accelerator.is_main_process:
        atomic_write_text(out / "result.json", result.model_dump_json(indent=2))
    return result


def _quantization(config: FinetuneConfig, device: Any) -> Any:
    """QLoRA's resolved quantisation settings (None for lora/full); fails early when bitsandbytes is missing."""
    if config.method != "qlora":
        return None
    from moesaic.finetune.quantize import resolve

    return resolve(config.quantization, device, config.gradient_checkpointing is not False)


def _write_schema(folder: Path, samples: list[Sample]) -> None:
    """Attribute rows: the inferred schema (field -> values seen) goes next to the run for eval-attributes."""
    from moesaic.finetune.attributes import SCHEMA_NAME
    from moesaic.finetune.schema import infer_schema, to_json_schema

    attrs = [s.attributes for s in samples if s.attributes]
    if attrs:
        atomic_write_text(folder / SCHEMA_NAME, json.dumps(to_json_schema(infer_schema(attrs)), indent=2))


def _logged_losses(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [json.loads(ln)["loss"] for ln in path.read_text().splitlines() if ln.strip()]


def _save_outputs(accelerator: Any, model: Any, processor: Any, config: FinetuneConfig, quant: Any = None) -> Path:
    """``adapter/`` (PEFT folder + processor; QLoRA: + quantization.json) for (Q)LoRA, ``model/`` for full."""
    adapter = config.method != "full"
    final = Path(config.output_dir) / ("adapter" if adapter else "model")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            if adapter:
                model.peft_config["default"].base_model_name_or_path = str(Path(config.base_model).resolve())
            model.save_pretrained(tmp)
            save_processor(processor, tmp)
            config.save(tmp)
            if quant is not None:
                from moesaic.finetune.quantize import write_settings

                write_settings(tmp, quant)
    accelerator.wait_for_everyone()
    return final
