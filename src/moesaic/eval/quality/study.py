"""The merged-model quality study: does a sparse MoE of fine-tuned experts keep what each expert learnt?

Steps (fixed seed): build a tiny random base VLM and pre-train it on domain-neutral captions → write one
synthetic domain per expert (train, gate and test rows, each its own seed; :mod:`.domains`) → fine-tune one
expert per domain, text MLPs only (:mod:`.models`) → merge
(a) an MoE with ``hidden`` gates (mergekit-moe's prompt-hidden-state recipe), (b) the same MoE with gates
trained as per-layer classifiers (Cephalo's recipe, ``moesaic train-gates``) and (c) a plain average of
the experts' weights → every model on every domain (greedy exact match) → retention (merged accuracy on
domain d ÷ expert d's accuracy on d) and the routing report of both MoEs (JSON + heatmap PNG).

Gate prompts and gate training use only the gate rows; test rows are never seen before evaluation. The
``moe_oracle`` row is a diagnostic, not a merge: the MoE with every token of every layer sent to the test
domain's own expert — the ceiling any router can reach (1.0 retention when the merge itself is lossless).
The ``*_seq`` rows evaluate the same two MoEs (no new training) with sequence routing: per layer, the
router logits are averaged over each prompt's real tokens and that one choice serves every token of the
request (:mod:`moesaic.moe.sequence_routing`); ``*_seq_first`` rows use the first layer's pooled choice in
every layer. The routing reports stay per token.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pydantic import BaseModel

from moesaic.atomic import atomic_write_text
from moesaic.eval.environment import environment
from moesaic.eval.quality.config import QualityStudyConfig
from moesaic.eval.quality.domains import write_captions, write_domain
from moesaic.eval.quality.models import average_models, build_base, pretrain_base, train_expert
from moesaic.eval.quality.scoring import (forced_routing, load_any, load_test_set, model_accuracy,
                                          pooled_choices, retention)
from moesaic.moe.config import ExpertSpec, MergeConfig, RouteReportConfig, TrainGatesConfig
from moesaic.moe.gate_train import train_gates
from moesaic.moe.merge import merge
from moesaic.moe.report import route_report

__all__ = ["QualityStudyResult", "quality_study", "MERGED", "ORACLE", "SEQUENCE_ROWS"]

log = logging.getLogger(__name__)

# the same MoE folders (no new training) evaluated with a load-time routing mode: row -> (MoE, mode)
SEQUENCE_ROWS: dict[str, tuple[str, str]] = {
    "moe_hidden_seq": ("moe_hidden", "sequence"), "moe_trained_seq": ("moe_trained", "sequence"),
    "moe_hidden_seq_first": ("moe_hidden", "sequence_first"),
    "moe_trained_seq_first": ("moe_trained", "sequence_first"),
}
MERGED: tuple[str, ...] = ("moe_hidden", "moe_trained", "average", *SEQUENCE_ROWS)
ORACLE = "moe_oracle"


class QualityStudyResult(BaseModel):
    out: str
    domains: list[str]
    accuracy: dict[str, dict[str, float]]  # model -> domain -> exact-match accuracy
    retention: dict[str, dict[str, float | None]]  # merged model -> domain -> ratio to the domain's expert
    mean_retention: dict[str, float | None]
    routing: dict[str, dict[str, list[float]]]  # MoE -> domain -> share per expert (mean over layers)
    # MoE -> domain -> per layer, share of test prompts whose pooled (sequence-routing) choice is the domain's expert
    sequence_choice: dict[str, dict[str, list[float]]] = {}
    gate_accuracy: float | None  # trained gates' classification accuracy on the gate rows (mean over layers)
    seconds: dict[str, float]  # phase -> wall time
    environment: dict[str, str] = {}  # versions and thread settings of the run (moesaic.eval.environment)

    def render(self) -> str:
        w = max(12, *(len(d) + 2 for d in self.domains))
        head = "model".ljust(22) + "".join(d.rjust(w) for d in self.domains) + "mean".rjust(w)
        lines = ["accuracy (greedy exact match; rows: models, columns: test domains)", head]
        for model, row in self.accuracy.items():
            vals = [row[d] for d in self.domains]
            lines.append(model.ljust(22) + "".join(f"{v:{w}.3f}" for v in vals) + f"{sum(vals) / len(vals):{w}.3f}")
        lines += ["", "retention (merged accuracy on d / expert d's accuracy on d)", head]
        for model, row in self.retention.items():  # moe_oracle last: a diagnostic ceiling, not a merge
            cells = "".join(("-" if row[d] is None else f"{row[d]:.3f}").rjust(w) for d in self.domains)
            mean = self.mean_retention[model]
            lines.append(model.ljust(22) + cells + ("-" if mean is None else f"{mean:.3f}").rjust(w))
        for moe, table in self.routing.items():
            lines += ["", f"{moe}: share of each domain's content tokens per expert (mean over layers)",
                      "domain".ljust(22) + "".join(d.rjust(w) for d in self.domains)]
            lines += [d.ljust(22) + "".join(f"{v:{w}.2f}" for v in table[d]) for d in self.domains]
        for moe, table in self.sequence_choice.items():
            lines += ["", f"{moe}: share of test prompts whose pooled choice is the domain's expert, per layer"]
            lines += [d.ljust(22) + " ".join(f"{v:.3f}" for v in table[d]) for d in self.domains]
        if self.gate_accuracy is not None:
            lines += ["", f"trained gates: {self.gate_accuracy:.3f} classification accuracy on the gate rows"]
        timing = ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items())
        lines += ["", f"wall time: {timing}; wrote {self.out}/results.json and */route_report.png"]
        if self.environment:
            lines.append("environment: " + ", ".join(f"{k} {v}" for k, v in self.environment.items()))
        return "\n".join(lines)


def _write_data(config: QualityStudyConfig, root: Path) -> dict[str, dict[str, Path]]:
    """Per domain: train, gate (another seed, for gate prompts and training) and test rows."""
    sizes = {"train": (config.train_samples, 0), "gate": (config.gate_samples, 1), "test": (config.test_samples, 2)}
    return {d: {split: write_domain(root / d / split, d, n, config.seed * 10 + s, config.image_size)
                for split, (n, s) in sizes.items()} for d in config.domains}


def _expert_specs(config: QualityStudyConfig, experts: dict[str, Path], data: dict[str, dict[str, Path]]
                  ) -> list[ExpertSpec]:
    specs = []
    for d, folder in experts.items():
        gate = data[d]["gate"]
        rows = [json.loads(x) for x in gate.read_text(encoding="utf-8").splitlines()[: config.gate_prompts]]
        specs.append(ExpertSpec(source_model=str(folder), name=d, positive_prompts=[r["question"] for r in rows],
                                positive_images=[str(gate.parent / r["image"]) for r in rows]))
    return specs


def _merge_all(config: QualityStudyConfig, base: Path, experts: dict[str, Path],
               data: dict[str, dict[str, Path]], root: Path) -> tuple[dict[str, Path], float | None]:
    """The three merged models; returns their folders and the trained gates' classification accuracy."""
    specs = _expert_specs(config, experts, data)
    hidden = root / "moe_hidden"
    merge(MergeConfig(base_model=str(base), experts=specs, gate_mode="hidden",
                      experts_per_token=config.experts_per_token, out=str(hidden), seed=config.seed))
    trained = root / "moe_trained"
    gates = train_gates(TrainGatesConfig(model=str(hidden), data=[str(data[d]["gate"]) for d in config.domains],
                                         steps=config.gate_steps, lr=config.gate_lr, pool=config.gate_pool,
                                         batch_size=config.gate_batch_size, out=str(trained), seed=config.seed,
                                         resume=False))
    average = average_models(list(experts.values()), root / "average")
    return {"moe_hidden": hidden, "moe_trained": trained, "average": average}, gates.train_accuracy


def _routing(moes: dict[str, Path], data: dict[str, dict[str, Path]], root: Path, samples: int
             ) -> dict[str, dict[str, list[float]]]:
    import torch

    out = {}
    for name in ("moe_hidden", "moe_trained"):
        report = route_report(RouteReportConfig(model=str(moes[name]), out=str(root / f"routing_{name}"),
                                                data={d: str(p["test"]) for d, p in data.items()},
                                                max_samples=samples))
        out[name] = {d: torch.tensor(table).mean(dim=0).tolist() for d, table in report.share.items()}
    return out


def _sequence_choice(config: QualityStudyConfig, models: dict[str, Path], tests: dict[str, list]
                     ) -> dict[str, dict[str, list[float]]]:
    """Per MoE and domain: per layer, the share of test prompts whose pooled choice is the domain's expert."""
    out = {}
    for name in ("moe_hidden", "moe_trained"):
        model, processor = load_any(models[name], routing="sequence")
        out[name] = {d: (pooled_choices(model, processor, tests[d], config.eval_batch_size) == i)
                     .float().mean(dim=1).tolist() for i, d in enumerate(config.domains)}  # experts in domain order
    return out


def _evaluate(config: QualityStudyConfig, models: dict[str, Path], moe: Path, tests: dict[str, list]
              ) -> dict[str, dict[str, float]]:
    """Every model on every domain, then the oracle row: the MoE with each domain's tokens forced to its expert."""
    accuracy = {}
    for name, folder in models.items():
        model, processor = load_any(folder)
        accuracy[name] = model_accuracy(model, processor, tests, config.max_new_tokens, config.eval_batch_size)
    for name, (moe_name, mode) in SEQUENCE_ROWS.items():  # no new training: the same MoEs, routed per prompt
        model, processor = load_any(models[moe_name], routing=mode)
        accuracy[name] = model_accuracy(model, processor, tests, config.max_new_tokens, config.eval_batch_size)
    model, processor = load_any(moe)
    accuracy[ORACLE] = {}
    for i, d in enumerate(config.domains):  # experts are merged in domain order
        with forced_routing(model, i):
            accuracy[ORACLE] |= model_accuracy(model, processor, {d: tests[d]}, config.max_new_tokens,
                                               config.eval_batch_size)
    return accuracy


def _base(config: QualityStudyConfig, root: Path) -> Path:
    random_base = build_base(config, root / "base_random")
    if config.pretrain_steps == 0:
        return random_base
    captions = write_captions(root / "data" / "captions", list(config.domains), config.pretrain_samples,
                              config.seed * 10 + 3, config.image_size)
    log.info("pre-training the base on %d captions", config.pretrain_samples * len(config.domains))
    return pretrain_base(config, random_base, captions, root / "runs" / "pretrain")


def quality_study(config: QualityStudyConfig) -> QualityStudyResult:
    """Run the whole study into ``config.out`` and return the accuracy matrix, retention and routing."""
    root = Path(config.out)
    root.mkdir(parents=True, exist_ok=True)
    config.save(root)
    clock, seconds = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase], clock = now - clock, now

    base = _base(config, root)
    lap("base")
    data = _write_data(config, root / "data")
    experts = {}
    for d in config.domains:
        log.info("fine-tuning the %s expert", d)
        train_expert(config, base, data[d]["train"], root / "runs" / d, root / "experts" / d)
        experts[d] = root / "experts" / d
    lap("experts")
    merged, gate_acc = _merge_all(config, base, experts, data, root)
    lap("merges")
    tests = {d: load_test_set(p["test"]) for d, p in data.items()}
    models = {"base": base, **{f"expert:{d}": f for d, f in experts.items()}, **merged}
    accuracy = _evaluate(config, models, merged["moe_trained"], tests)
    choice = _sequence_choice(config, merged, tests)
    lap("evaluation")
    routing = _routing(merged, data, root, config.routing_samples)
    lap("routing")
    own = {d: accuracy[f"expert:{d}"] for d in config.domains}
    ret = {m: retention(accuracy[m], own) for m in (*MERGED, ORACLE)}
    mean = {m: (sum(v for v in r.values() if v is not None) / len(r)) if None not in r.values() else None
            for m, r in ret.items()}
    result = QualityStudyResult(out=str(root), domains=list(config.domains), accuracy=accuracy, retention=ret,
                                mean_retention=mean, routing=routing, sequence_choice=choice,
                                gate_accuracy=gate_acc, seconds=seconds, environment=environment())
    atomic_write_text(root / "results.json", result.model_dump_json(indent=2))
    return result
