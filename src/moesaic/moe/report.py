"""``moesaic route-report``: per layer, the share of each domain's tokens sent to each expert.

Writes ``route_report.json`` (the table) and ``route_report.png`` (one heatmap per domain: layers ×
experts) atomically into ``--out``. A share counts top-k selections: with k=2 each token counts twice,
so every row sums to 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel
from torch import nn

from moesaic.atomic import atomic_dir
from moesaic.config import RESOLVED_CONFIG_NAME
from moesaic.errors import missing_extra
from moesaic.moe.config import MERGE_CONFIG_NAME, RouteReportConfig
from moesaic.moe.data import Sample, encode_sample, load_samples, template_ids
from moesaic.moe.routing import load_moe, record_routing, routers
from moesaic.progress import progress

__all__ = ["route_report", "RouteReportResult", "routing_shares", "expert_labels"]


class RouteReportResult(BaseModel):
    experts: list[str]
    tokens: dict[str, int]
    share: dict[str, list[list[float]]]  # domain -> per layer -> per expert
    out: str | None = None

    def render(self) -> str:
        n = len(next(iter(self.share.values())))
        late = slice(n // 2, n)
        lines = [f"share of tokens per expert (layers {late.start}-{n - 1}, mean)",
                 "domain".ljust(16) + "".join(e[:12].rjust(13) for e in self.experts)]
        for domain, table in self.share.items():
            mean = torch.tensor(table[late]).mean(dim=0).tolist()
            lines.append(domain[:15].ljust(16) + "".join(f"{v:13.2f}" for v in mean))
        if self.out:
            lines.append(f"wrote {self.out}/route_report.json and route_report.png")
        return "\n".join(lines)


@torch.no_grad()
def routing_shares(model: nn.Module, processor: Any, samples: list[Sample], desc: str = "routing",
                   count: str = "content") -> tuple[torch.Tensor, int]:
    """(layers, experts) share of top-k selections over the tokens of ``samples``, and the token count.

    ``count="content"`` skips the chat template's and special tokens (shared by every domain, so they
    say nothing about routing by domain); ``"all"`` counts every token.
    """
    gates = routers(model)
    skip = torch.tensor(sorted(template_ids(processor))) if count == "content" else torch.tensor([], dtype=torch.long)
    counts = torch.zeros(len(gates), gates[0].weight.shape[0])  # (layers, experts)
    tokens = 0
    with record_routing(model) as calls:
        for sample in progress(samples, desc=desc, unit="sample"):
            inputs = encode_sample(processor, sample)
            model(**inputs)
            keep = ~torch.isin(inputs["input_ids"].flatten(), skip)  # (seq,)
            tokens += int(keep.sum())
            for i, layer_calls in enumerate(calls):
                _, top_i = layer_calls.pop()  # (tokens, k)
                counts[i] += torch.bincount(top_i[keep].flatten(), minlength=counts.shape[1]).float()
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1), tokens


def expert_labels(folder: str | Path, model: nn.Module, n: int) -> list[str]:
    """Names from the merge config saved next to the model, else ``expert 0``, ``expert 1``…"""
    spec = getattr(model.config, "moesaic", None)
    if isinstance(spec, dict) and len(spec.get("experts") or []) == n:
        return list(spec["experts"])
    for name in (MERGE_CONFIG_NAME, RESOLVED_CONFIG_NAME):
        cfg = Path(folder) / name
        if cfg.is_file():
            experts = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("experts") or []
            if len(experts) == n and all(isinstance(e, dict) and "source_model" in e for e in experts):
                return [e.get("name") or Path(e["source_model"]).name for e in experts]
    return [f"expert {i}" for i in range(n)]


def _plot(result: RouteReportResult, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_extra("matplotlib", "tasks") from None
    domains = list(result.share)
    fig, axes = plt.subplots(1, len(domains), figsize=(2.5 + 1.2 * len(result.experts) * len(domains), 4),
                             squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        im = ax.imshow(result.share[domain], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"{domain} ({result.tokens[domain]} tokens)")
        ax.set_xticks(range(len(result.experts)), result.experts, rotation=45, ha="right")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of tokens")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def route_report(config: RouteReportConfig) -> RouteReportResult:
    """Share of each domain's tokens per expert and layer: moesaic route-report MODEL --data {a: a.jsonl} --out DIR."""
    data = {d: load_samples(p, config.max_samples) for d, p in config.data.items()}  # validate before loading
    model, processor = load_moe(config.model)
    n = routers(model)[0].weight.shape[0]
    share, tokens = {}, {}
    for domain, samples in data.items():
        table, count = routing_shares(model, processor, samples, f"routing {domain}", config.count)
        share[domain], tokens[domain] = table.tolist(), count
    result = RouteReportResult(experts=expert_labels(config.model, model, n), tokens=tokens, share=share,
                               out=config.out)
    if config.out:
        with atomic_dir(config.out) as tmp:
            (tmp / "route_report.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
            if config.plot:
                _plot(result, tmp / "route_report.png")
            config.save(tmp)
    return result
