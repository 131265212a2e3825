"""The real-decoder quality study, Phase A: stages, caching, the validation → selection → test protocol.

Stages (each cached under ``out``; a rerun resumes at the first missing artefact; one log line per stage):
base (SmolLM2 GGUF → ``LlamaForCausalLM`` folder) → data (train / validation / test rows per domain, three
seeds) → experts (``moesaic finetune`` + ``export-adapter`` per setting and domain) → merges (MoE k = 1 and
2 with hidden gates, averaging, TIES and DARE-TIES per density) → validation scores (every model, ~100 rows
per domain) → selection file (densities chosen on validation; the list of test models) → test scores (only
the selected models; refuses to run unless the selection file is committed, and records its sha256).

Oracle rows force every token of every layer of the k = 1 MoE to the row's own expert; the MoE keeps the
base's non-MLP weights (``shared_weights: base``), so for ``lora`` experts the oracle is "base attention +
this expert's MLP", and for ``mlp`` experts it must equal the expert: checked in code (logits and answers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesaic.atomic import atomic_write_text
from moesaic.errors import ConfigError
from moesaic.eval.quality_real.config import RealStudyConfig
from moesaic.eval.quality_real.domains import write_split
from moesaic.eval.quality_real.models import mergekit_merge, moe_merge, train_expert
from moesaic.eval.quality_real.report import results_phase

__all__ = ["ModelEntry", "real_quality_study", "selection_hash"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    folder: Path
    setting: str
    oracle: bool = False
    own_domain: str | None = None  # experts are scored on their own domain only


def _prefix(setting: str) -> str:
    return "" if setting == "lora" else f"{setting}/"


def _stage(name: str, started: float) -> None:
    log.info("[%6.0fs] stage %s", time.perf_counter() - started, name)


def _base(config: RealStudyConfig, root: Path) -> Path:
    if config.base == "tiny":
        from moesaic.testing.causal import make_tiny_causal_lm

        folder = root / "base"
        if not (folder / "config.json").is_file():
            make_tiny_causal_lm(folder, seed=config.seed, initializer_range=0.3)
        return folder
    from moesaic.eval.quality_real.base import build_smollm2_base

    return build_smollm2_base(root / "base")


def _data(config: RealStudyConfig, root: Path) -> dict[str, dict[str, Path]]:
    sizes = {"train": config.train_rows, "validation": config.validation_rows, "test": config.test_rows}
    return {d: {s: write_split(root / "data" / d / f"{s}.jsonl", d, s, n, config.seed) for s, n in sizes.items()}
            for d in config.domains}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _experts(config: RealStudyConfig, root: Path, base: Path, data: dict[str, dict[str, Path]], setting: str,
             started: float) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in config.domains:
        folder = root / "experts" / setting / d
        monitor = root / "data" / d / "monitor.jsonl"  # a few validation rows: finetune's before/after loss
        if not monitor.is_file():
            atomic_write_text(monitor, "".join(x + "\n" for x in data[d]["validation"].read_text().splitlines()[:16]))
        result = train_expert(base, data[d]["train"], monitor, root / "runs" / setting / d,
                              folder, setting, config)  # type: ignore[arg-type]
        _stage(f"expert {setting}/{d}: loss {result['first_loss']:.3f} → {result['final_loss']:.3f}", started)
        out[d] = folder
    return out


def _merges(config: RealStudyConfig, root: Path, base: Path, experts: dict[str, dict[str, Path]],
            data: dict[str, dict[str, Path]], started: float) -> dict[str, ModelEntry]:
    """Every model of the validation grid by name (experts first, so partial runs score them first)."""
    from moesaic.eval.quality.models import average_models

    prompts = {d: [r["question"] for r in _rows(data[d]["train"])[: config.gate_prompts]] for d in config.domains}
    models: dict[str, ModelEntry] = {"base": ModelEntry(base, "-")}
    for setting, by_domain in experts.items():
        p, m = _prefix(setting), root / "merges" / setting
        for d, folder in by_domain.items():
            models[f"{p}expert:{d}"] = ModelEntry(folder, setting, own_domain=d)
        for k in (1, 2):
            name = "moe_token" if k == 1 else "moe_k2"
            models[p + name] = ModelEntry(moe_merge(base, by_domain, prompts, m / name, k, config.seed), setting)
        models[p + "oracle"] = ModelEntry(m / "moe_token", setting, oracle=True)
        if not (m / "average" / "config.json").is_file():
            average_models(list(by_domain.values()), m / "average")
        models[p + "average"] = ModelEntry(m / "average", setting)
        for method, densities in (("ties", config.ties_densities), ("dare_ties", config.dare_densities)):
            for dens in densities:
                folder = mergekit_merge(method, base, list(by_domain.values()), m / f"{method}@{dens}", dens,  # type: ignore[arg-type]
                                        config.seed)
                models[f"{p}{method}@{dens}"] = ModelEntry(folder, setting)
        _stage(f"merges {setting}", started)
    return models


def _load(entry: ModelEntry) -> tuple[Any, Any]:
    from moesaic.errors import ModelLoadError
    from moesaic.finetune.model import load_model, load_processor
    from moesaic.moe.routing import load_moe

    try:
        model, _ = load_moe(entry.folder, routing="token")
    except ModelLoadError:  # no routers: a dense model
        model = load_model(entry.folder)
    return model.eval(), load_processor(entry.folder)


def _score(config: RealStudyConfig, root: Path, name: str, entry: ModelEntry, split: str,
           data: dict[str, dict[str, Path]]) -> dict[str, list[dict[str, bool]]]:
    """Per domain, per row: field -> right; cached in ``scores/<split>/<name>.json``."""
    from moesaic.eval.quality.scoring import forced_routing
    from moesaic.eval.quality_real.scoring import build_targets, score_rows

    cache = root / "scores" / split / (name.replace("/", "__").replace(":", "_") + ".json")
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    model, processor = _load(entry)
    domains = [entry.own_domain] if entry.own_domain else config.domains
    out = {}
    for d in domains:
        rows = build_targets(processor.tokenizer, processor, _rows(data[d][split]))
        if entry.oracle:
            with forced_routing(model, config.domains.index(d)):  # experts are merged in domain order
                out[d] = score_rows(model, processor.tokenizer, rows, config.eval_batch_size, f"{name} {d}")
        else:
            out[d] = score_rows(model, processor.tokenizer, rows, config.eval_batch_size, f"{name} {d}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(out))
    return out


def _invariant(config: RealStudyConfig, models: dict[str, ModelEntry], scores: dict[str, Any],
               data: dict[str, dict[str, Path]]) -> dict[str, float]:
    """MLP-only experts under oracle routing must equal the experts: same answers, logits within 1e-4."""
    import torch

    from moesaic.eval.quality.scoring import forced_routing

    if "mlp" not in config.expert_settings:
        return {}
    moe, processor = _load(models["mlp/oracle"])
    tok = processor.tokenizer
    diffs = {}
    for i, d in enumerate(config.domains):
        if scores["mlp/oracle"][d] != scores[f"mlp/expert:{d}"][d]:
            raise ConfigError(f"invariant broken: MLP-only expert {d} under oracle routing answers differently "
                              "from the expert", "report this as a bug in moesaic merge")
        expert, _ = _load(models[f"mlp/expert:{d}"])
        texts = [processor.apply_chat_template([{"role": "user", "content": r["question"]}],
                                               add_generation_prompt=True, tokenize=False)
                 for r in _rows(data[d]["validation"])[:4]]
        side, tok.padding_side = tok.padding_side, "left"
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        tok.padding_side = side
        with torch.no_grad(), forced_routing(moe, i):
            got = moe(**enc).logits
        with torch.no_grad():
            want = expert(**enc).logits
        mask = enc["attention_mask"].bool()
        diffs[d] = float((got - want).abs()[mask].max())
        if diffs[d] > 1e-3:
            raise ConfigError(f"invariant broken: MLP-only expert {d} under oracle routing differs by "
                              f"{diffs[d]:.2e} in logits", "report this as a bug in moesaic merge")
    return diffs


def _routing(config: RealStudyConfig, root: Path, models: dict[str, ModelEntry],
             data: dict[str, dict[str, Path]]) -> dict[str, str]:
    """route-report heatmaps (validation rows, all tokens) of every k = 1 MoE; returns name -> PNG path."""
    from moesaic.moe.config import RouteReportConfig
    from moesaic.moe.report import route_report

    out = {}
    for name in [n for n in models if n.endswith("moe_token")]:
        folder = root / "routing" / name.replace("/", "__")
        if not (folder / "route_report.json").is_file():
            route_report(RouteReportConfig(model=str(models[name].folder), out=str(folder), count="all",
                                           data={d: str(data[d]["validation"]) for d in config.domains},
                                           max_samples=config.routing_rows))
        out[name] = str(folder / "route_report.png")
    return out


def selection_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_committed(path: Path) -> None:
    where = path.resolve().parent
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=where, capture_output=True)
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path.name], cwd=where, capture_output=True)
    if tracked.returncode != 0 or clean.returncode != 0:
        raise ConfigError(f"the selection file {path} is not committed unmodified",
                          "commit the selection written by the validation stage before scoring the test rows")


def _check_selection(config: RealStudyConfig, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"no selection file at {path}",
                          "run the validation stage first (stage: validation) and commit its selection file")
    if config.require_committed:
        _check_committed(path)


def _select(config: RealStudyConfig, models: dict[str, ModelEntry], val: dict[str, Any]) -> dict[str, Any]:
    """Densities with the best mean validation accuracy; the list of models scored on test."""
    from moesaic.eval.quality_real.report import accuracy_of

    chosen: dict[str, Any] = {}
    test_models = ["base"]
    for setting in config.expert_settings:
        p = _prefix(setting)
        test_models += [f"{p}expert:{d}" for d in config.domains]
        test_models += [p + n for n in ("moe_token", "moe_k2", "oracle", "average")]
        for method, densities in (("ties", config.ties_densities), ("dare_ties", config.dare_densities)):
            means = {dens: sum(accuracy_of(val[f"{p}{method}@{dens}"][d]) for d in config.domains) / len(config.domains)
                     for dens in densities}
            best = max(densities, key=lambda x: (means[x], -x))
            chosen[p + method] = {"density": best, "validation_mean_accuracy": means}
            test_models.append(f"{p}{method}@{best}")
    return {"phase": "A", "config": config.model_dump(mode="json", exclude={"stage", "require_committed"}),
            "choices": chosen, "recommended": "moe_token", "test_models": test_models}


def real_quality_study(config: RealStudyConfig) -> dict[str, Any]:
    """Run the requested stages; returns the results dict written to ``config.results`` (or the selection)."""
    started = time.perf_counter()
    selection_path = Path(config.selection)
    if config.stage == "test":  # refuse before building anything
        _check_selection(config, selection_path)
    root = Path(config.out)
    root.mkdir(parents=True, exist_ok=True)
    config.save(root)
    base = _base(config, root)
    _stage("base", started)
    data = _data(config, root)
    _stage("data", started)
    experts: dict[str, dict[str, Path]] = {}
    val: dict[str, Any] = {}
    for setting in config.expert_settings:  # one setting at a time: a partial run has whole settings scored
        experts[setting] = _experts(config, root, base, data, setting, started)
        models = _merges(config, root, base, experts, data, started)
        for name, entry in models.items():
            if config.stage in ("validation", "all") and name not in val:
                val[name] = _score(config, root, name, entry, "validation", data)
                _stage(f"validation scores {name}", started)
    if config.stage in ("validation", "all"):
        invariant = _invariant(config, models, val, data)
        selection = _select(config, models, val) | {"invariant_max_logit_diff": invariant,
                                                    "routing_heatmaps": _routing(config, root, models, data)}
        selection_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(selection_path, json.dumps(selection, indent=2) + "\n")
        _stage(f"selection written to {selection_path}", started)
        if config.stage == "validation":
            return selection
    _check_selection(config, selection_path)
    selection = json.loads(selection_path.read_text())
    digest = selection_hash(selection_path)
    val = {n: _score(config, root, n, models[n], "validation", data) for n in selection["test_models"]}
    test = {}
    for name in selection["test_models"]:
        test[name] = _score(config, root, name, models[name], "test", data)
        _stage(f"test scores {name}", started)
    phase = results_phase(config, selection, {"validation": val, "test": test})
    result = {"settings": {"selection_file": str(selection_path), "selection_sha256": digest,
                           "seconds": round(time.perf_counter() - started, 1), **selection["config"]},
              "phases": {"A": phase}}
    Path(config.results).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(config.results), json.dumps(result, indent=2) + "\n")
    _stage(f"results written to {config.results}", started)
    return result
