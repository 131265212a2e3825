"""``moesaic train-gates``: train only the routers of a merged MoE on per-expert sample sets.

Objectives (after Cephalo):

* ``classify`` — run each expert's samples through the model once, take the hidden state entering each
  layer's MoE block (mean-pooled per sample, or every token with ``pool=token``) and train each layer's
  router as a linear classifier toward that expert's index (cross-entropy); all else frozen.
* ``lm`` — only router weights trainable, next-token loss on the answers (or whole samples), plus an
  optional Switch-Transformer load-balancing loss (Fedus et al. 2021, eq. 4) weighted by ``load_balance``.

Checkpoints (router weights, optimiser, step) go to a sibling folder every ``save_every`` steps, so an
interrupted run resumes; the finished model is written atomically and the checkpoint removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from moesaic.atomic import atomic_dir, atomic_write_bytes
from moesaic.config import RESOLVED_CONFIG_NAME
from moesaic.errors import ConfigError
from moesaic.moe.config import MERGE_CONFIG_NAME, TrainGatesConfig
from moesaic.moe.data import Sample, encode_sample, load_samples, template_ids
from moesaic.moe.gate_lm import lm_step
from moesaic.moe.gates import capture_mlp_inputs
from moesaic.moe.routing import load_moe, routers, save_moe
from moesaic.progress import progress

__all__ = ["train_gates", "TrainGatesResult", "classify_features", "MERGE_CONFIG_NAME"]

log = logging.getLogger(__name__)


class TrainGatesResult(BaseModel):
    out: str
    objective: str
    steps: int
    resumed_from: int
    first_loss: float
    last_loss: float
    train_accuracy: float | None = None  # classify: mean over layers

    def render(self) -> str:
        acc = f", gate accuracy {self.train_accuracy:.2f}" if self.train_accuracy is not None else ""
        again = f" (resumed at step {self.resumed_from})" if self.resumed_from else ""
        return (f"trained gates ({self.objective}) for {self.steps} steps{again}: loss {self.first_loss:.4f} → "
                f"{self.last_loss:.4f}{acc}; wrote {self.out}")


@torch.no_grad()
def classify_features(model: nn.Module, processor: Any, sets: list[list[Sample]], pool: str
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per layer (n, hidden) features of every sample (or content token), and (n,) expert labels.

    ``pool="token"`` skips chat-template and special tokens: every expert's samples share them, so they
    cannot be classified (and the router's choice for them is left to training-free defaults).
    """
    feats: list[list[torch.Tensor]] | None = None
    labels: list[int] = []
    skip = torch.tensor(sorted(template_ids(processor)))
    with capture_mlp_inputs(model) as captured:
        for expert, samples in enumerate(sets):
            for sample in progress(samples, desc=f"features: expert {expert}", unit="sample"):
                inputs = encode_sample(processor, sample)
                model(**inputs)
                keep = ~torch.isin(inputs["input_ids"][0], skip)  # (seq,)
                rows = [h[0].float().mean(0, keepdim=True) if pool == "mean" else h[0, keep].float()
                        for h in captured if h is not None]  # each (1 or content tokens, hidden)
                feats = [[r] for r in rows] if feats is None else [f + [r] for f, r in zip(feats, rows, strict=True)]
                labels += [expert] * rows[0].shape[0]
    assert feats is not None
    return [torch.cat(f) for f in feats], torch.tensor(labels)


def _classify_loss(gates: list[nn.Module], feats: list[torch.Tensor], y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
    losses = [F.cross_entropy(x[idx] @ g.weight.float().T, y[idx]) for g, x in zip(gates, feats, strict=True)]
    return torch.stack(losses).mean()


def _fingerprint(config: TrainGatesConfig) -> str:
    keys = config.model_dump(include={"model", "data", "objective", "pool", "lr", "batch_size", "load_balance",
                                      "max_samples", "seed"})
    return hashlib.sha256(repr(sorted(keys.items())).encode()).hexdigest()[:16]


def _state_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.train-gates"


def _save_state(folder: Path, step: int, gates: list[nn.Module], opt: torch.optim.Optimizer, fp: str,
                first_loss: float) -> None:
    buf = io.BytesIO()
    torch.save({"step": step, "gates": [g.weight.detach().clone() for g in gates], "opt": opt.state_dict(),
                "fingerprint": fp, "first_loss": first_loss}, buf)
    atomic_write_bytes(folder / "state.pt", buf.getvalue())


def _load_state(folder: Path, gates: list[nn.Module], opt: torch.optim.Optimizer, fp: str) -> tuple[int, float | None]:
    path = folder / "state.pt"
    if not path.is_file():
        return 0, None
    state = torch.load(path, weights_only=True)
    if state.get("fingerprint") != fp:
        log.warning("ignoring %s: it was written for other settings", path)
        return 0, None
    with torch.no_grad():
        for g, w in zip(gates, state["gates"], strict=True):
            g.weight.copy_(w)
    opt.load_state_dict(state["opt"])
    log.info("resuming gate training at step %d", state["step"])
    return int(state["step"]), float(state["first_loss"])


def _check(config: TrainGatesConfig, gates: list[nn.Module]) -> None:
    n = gates[0].weight.shape[0]
    if len(config.data) != n:
        raise ConfigError(f"--data lists {len(config.data)} sample files but the model has {n} experts",
                          "give one JSONL file per expert, in expert order", param="data")
    top_k = getattr(gates[0], "top_k", 1)
    if config.objective == "lm" and top_k == 1 and config.load_balance == 0:
        raise ConfigError("objective lm with experts_per_token=1 gives the gates no gradient "
                          "(the renormalised top-1 weight is always 1)",
                          "use --objective classify, a model merged with experts_per_token ≥ 2, or --load-balance")


def train_gates(config: TrainGatesConfig) -> TrainGatesResult:
    """Train only the routers of a merged MoE: moesaic train-gates MODEL --data [expert0.jsonl, expert1.jsonl]."""
    sets = [load_samples(p, config.max_samples) for p in config.data]  # validate before loading weights
    model, processor = load_moe(config.model)
    gates = routers(model)
    _check(config, gates)
    out = Path(config.out or config.model)
    torch.manual_seed(config.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for g in gates:
        g.weight.requires_grad_(True)
    opt = torch.optim.Adam([g.weight for g in gates], lr=config.lr)
    fp, state_dir = _fingerprint(config), _state_dir(out)
    # features come from the model as loaded (before a checkpoint's gates), so a resumed run sees the same data
    feats, y = classify_features(model, processor, sets, config.pool) if config.objective == "classify" else ([], None)
    start, first = _load_state(state_dir, gates, opt, fp) if config.resume else (0, None)
    flat = [(e, s) for e, samples in enumerate(sets) for s in samples]
    loss = torch.tensor(float("nan"))
    for step in progress(range(start, config.steps), desc="training gates", total=config.steps - start, unit="step"):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)  # per step: resumes replay exactly
        if y is not None:
            idx = torch.randint(len(y), (min(config.batch_size, len(y)),), generator=gen)
            loss = _classify_loss(gates, feats, y, idx)
            loss.backward()
        else:
            picks = torch.randint(len(flat), (config.batch_size,), generator=gen).tolist()
            loss = lm_step(model, processor, [flat[i][1] for i in picks], config.load_balance)
        opt.step()
        first = loss.item() if first is None else first
        if (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            _save_state(state_dir, step + 1, gates, opt, fp, first)
    accuracy = _accuracy(gates, feats, y) if y is not None else None
    _write(model, processor, config, out)
    shutil.rmtree(state_dir, ignore_errors=True)
    return TrainGatesResult(out=str(out), objective=config.objective, steps=config.steps, resumed_from=start,
                            first_loss=first if first is not None else loss.item(), last_loss=loss.item(),
                            train_accuracy=accuracy)


@torch.no_grad()
def _accuracy(gates: list[nn.Module], feats: list[torch.Tensor], y: torch.Tensor) -> float:
    accs = [((x @ g.weight.float().T).argmax(-1) == y).float().mean() for g, x in zip(gates, feats, strict=True)]
    return float(torch.stack(accs).mean())


def _write(model: nn.Module, processor: Any, config: TrainGatesConfig, out: Path) -> None:
    src = Path(config.model)
    for p in model.parameters():
        p.requires_grad_(False)
    with atomic_dir(out) as tmp:
        save_moe(model, processor, tmp)
        for name in (MERGE_CONFIG_NAME, RESOLVED_CONFIG_NAME):  # keep the merge recipe (expert names)
            if (src / name).is_file() and not (tmp / MERGE_CONFIG_NAME).exists():
                text = (src / name).read_text(encoding="utf-8")
                if name == MERGE_CONFIG_NAME or "base_model" in text:
                    (tmp / MERGE_CONFIG_NAME).write_text(text, encoding="utf-8")
        config.save(tmp)
