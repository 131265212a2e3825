"""The training loop: deterministic data order, gradient accumulation, checkpoints, resume.

Why our own loop rather than ``transformers.Trainer``: VLM batches need the processor at collate time
(tiles, grids, pixel masks differ per family) and labels from our assistant spans; the data order must be a
pure function of (seed, epoch, position) so a resumed run replays exactly the batches an uninterrupted run
would see; and the checkpoint must hold only trainable weights. A ~100-line loop on ``accelerate``
does all of this and stays readable; ``accelerate`` gives multi-GPU/mixed precision unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from moesaic.finetune.checkpoint import TrainState, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from moesaic.finetune.config import FinetuneConfig
from moesaic.finetune.data import Sample
from moesaic.finetune.encode import Encoded, collate
from moesaic.progress import progress

__all__ = ["Plan", "plan_steps", "micro_batch", "train_loop"]

log = logging.getLogger(__name__)


class Plan:
    """How many micro-batches an epoch has and how many optimizer steps the run takes."""

    def __init__(self, n: int, config: FinetuneConfig, world: int) -> None:
        per = config.batch_size * world
        self.micro_per_epoch = math.ceil(n / per) if world == 1 else max(1, n // per)
        self.total_steps = config.max_steps or math.ceil(config.epochs * self.micro_per_epoch / config.grad_accum)
        self.n = n


def plan_steps(n: int, config: FinetuneConfig, world: int = 1) -> Plan:
    return Plan(n, config, world)


def micro_batch(plan: Plan, micro: int, config: FinetuneConfig, rank: int, world: int) -> list[int]:
    """Indices of micro-batch ``micro`` for process ``rank``: a pure function of (seed, epoch, position)."""
    import torch

    epoch, pos = divmod(micro, plan.micro_per_epoch)
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(plan.n, generator=gen).tolist()
    per = config.batch_size * world
    chunk = order[pos * per:(pos + 1) * per]
    return chunk[rank * config.batch_size:(rank + 1) * config.batch_size] or chunk[:config.batch_size]


def _metrics_resume(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so the log matches an uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if json.loads(ln).get("step", 0) <= step:
                keep.append(ln)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
    from moesaic.atomic import atomic_write_text

    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def train_loop(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, processor: Any,
               items: list[tuple[Sample, Encoded]],
               config: FinetuneConfig) -> tuple[TrainState, list[float], Path | None]:
    """Run to ``total_steps``; returns the final state, the per-step losses of this process, resumed-from."""
    out = Path(config.output_dir)
    ckpt_root, metrics = out / "checkpoints", out / "metrics.jsonl"
    plan = plan_steps(len(items), config, accelerator.num_processes)
    raw = accelerator.unwrap_model(model)
    state, resumed = TrainState(), None
    if not config.resume and accelerator.is_main_process and ckpt_root.exists():
        shutil.rmtree(ckpt_root)  # a fresh run must not mix with (or be pruned against) an old run's steps
    accelerator.wait_for_everyone()
    if config.resume and (found := latest_checkpoint(ckpt_root)) is not None:
        state, resumed = load_checkpoint(found, raw, optimizer, scheduler, accelerator.process_index), found
        log.info("resuming from %s (step %d)", found, state.step)
    if accelerator.is_main_process and resumed:
        _metrics_resume(metrics, state.step)
    elif accelerator.is_main_process:
        metrics.unlink(missing_ok=True)
    losses: list[float] = []
    model.train()
    started = time.perf_counter() - state.elapsed_s
    for _ in progress(range(state.step, plan.total_steps), desc="training", total=plan.total_steps - state.step,
                      unit="step"):
        step_loss = 0.0
        for k in range(config.grad_accum):
            idx = micro_batch(plan, state.micro, config, accelerator.process_index, accelerator.num_processes)
            batch = {n: t.to(accelerator.device) for n, t in collate(processor, [items[i] for i in idx]).items()}
            sync = k == config.grad_accum - 1
            with nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
                loss = model(**batch).loss / config.grad_accum
                accelerator.backward(loss)
            step_loss += float(loss.detach())
            state.micro += 1
            state.samples += len(idx) * accelerator.num_processes
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if accelerator.num_processes > 1:  # log the mean over processes, not rank 0's share
            import torch

            step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean"))
        state.step += 1
        state.elapsed_s = time.perf_counter() - started
        losses.append(step_loss)
        _log_step(accelerator, metrics, state, step_loss, scheduler, plan, config)
        if config.save_every and state.step % config.save_every == 0 and state.step < plan.total_steps:
            _save(accelerator, ckpt_root, raw, optimizer, scheduler, state, config)
    _save(accelerator, ckpt_root, raw, optimizer, scheduler, state, config)
    return state, losses, resumed


def _save(accelerator: Any, root: Path, raw: Any, optimizer: Any, scheduler: Any, state: TrainState,
          config: FinetuneConfig) -> None:
    from accelerate.utils import gather_object

    rngs = gather_object([rng_state()])  # every process's RNG (dropout), so each resumes its own stream
    if accelerator.is_main_process:
        save_checkpoint(root, raw, optimizer, scheduler, state, config, config.keep_checkpoints, rngs)
    accelerator.wait_for_everyone()


def _log_step(accelerator: Any, path: Path, state: TrainState, loss: float, scheduler: Any, plan: Plan,
              config: FinetuneConfig) -> None:
    if not accelerator.is_main_process or (state.step % config.log_every and state.step != plan.total_steps):
        return
    row = {"step": state.step, "epoch": round(state.micro / plan.micro_per_epoch, 4), "loss": round(loss, 6),
           "lr": scheduler.get_last_lr()[0], "samples": state.samples, "elapsed_s": round(state.elapsed_s, 3)}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    log.info("step %d loss %.4f", state.step, loss)
