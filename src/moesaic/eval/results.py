"""Result objects of ``moesaic eval``: per sample, per dataset, per model, and the whole run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from moesaic.eval.tables import fmt, markdown_table

__all__ = ["SampleRecord", "DatasetScores", "ModelResult", "EvalResult", "pareto_front", "fmt"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SampleRecord(_Result):
    model: str
    dataset: str
    sample_id: str
    question: str
    answer: str
    references: list[str] = Field(default_factory=list)
    attributes: dict[str, object] = Field(default_factory=dict)
    scores: dict[str, float]
    field_scores: dict[str, float] = Field(default_factory=dict)
    primary: float = Field(description="score on the dataset's primary metric")
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class DatasetScores(_Result):
    dataset: str
    samples: int
    rows: str = Field("short answers", description="what the rows ask for: short answers, numbers, text, attributes")
    primary_metric: str = Field(description="the metric that ranks this dataset")
    chosen_by: str = Field("rows", description="'rows' (the default for this kind of rows) or 'config'")
    primary: float
    latency_p50_s: float | None = Field(None, description="median latency of this dataset's samples")
    strict_metric: str | None = Field(None, description="the strict metric reported beside a relaxed primary")
    strict: float | None = None
    metrics: dict[str, float] = Field(description="mean of each metric over the samples it applies to")
    field_accuracy: dict[str, float] = Field(default_factory=dict, description="attribute datasets: per field")
    judge_agreement: float | None = Field(
        None, description="share of question rows where the judge and the primary metric agree (pass = ≥ 0.5)")


class ModelResult(_Result):
    name: str
    kind: str = Field(description="'local' or 'endpoint'")
    samples: int
    cache_hits: int
    model_calls: int = Field(description="timed requests made in this run (warm-up excluded)")
    load_s: float | None = Field(None, description="seconds to load the model; None when it was not loaded")
    accuracy: float = Field(description="mean over datasets of their primary metric")
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    tokens_per_s: float | None = Field(description="completion tokens / generation seconds; None when unknown")
    peak_rss_mb: float | None = Field(
        description="process RSS high-water mark from just before loading to the end of this model's run "
                    "(includes what the process already held); None for endpoint models"
    )
    cuda_peak_mb: float | None = None
    price_per_hour: float | None = None
    cost_per_1k: float | None = Field(None, description="price_per_hour × mean latency (s) × 1000 / 3600")
    datasets: list[DatasetScores]

    @property
    def memory_mb(self) -> float | None:
        return self.cuda_peak_mb if self.cuda_peak_mb is not None else self.peak_rss_mb


class EvalResult(_Result):
    out: str
    models: list[ModelResult]
    cache_hits: int = Field(description="samples answered from the cache, all models")
    pareto: list[str] = Field(description="models on the accuracy/latency Pareto front")
    ranking: list[str] = Field(default_factory=list, description="per dataset: the metric that ranked the models")
    judge: dict[str, object] | None = Field(None, description="judge model, prompt version, calls and cache hits")
    files: dict[str, str] = Field(description="artefact name → path")

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    def render(self) -> str:
        lines = [markdown_table(self), "", *self.ranking,
                 f"cache hits: {self.cache_hits}; Pareto front: {', '.join(self.pareto) or '-'}"]
        lines += [f"{name}: {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def pareto_front(models: list[ModelResult]) -> list[str]:
    """Models no other model beats on both axes (accuracy higher-or-equal and p50 latency lower-or-equal,
    with at least one strictly better), in order of increasing latency."""
    front = []
    for m in models:
        dominated = any(
            o is not m and o.accuracy >= m.accuracy and o.latency_p50_s <= m.latency_p50_s
            and (o.accuracy > m.accuracy or o.latency_p50_s < m.latency_p50_s)
            for o in models
        )
        if not dominated:
            front.append(m)
    return [m.name for m in sorted(front, key=lambda m: (m.latency_p50_s, -m.accuracy))]
