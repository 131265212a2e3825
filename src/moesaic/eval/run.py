"""``moesaic eval``: run every model on every dataset, score, measure, and write the comparison.

Per model: one request per sample (so latency is per request), answers cached per sample in the output
folder (a re-run only asks what is missing and does not even load a model whose answers are all cached),
peak memory measured from just before loading to the end of its run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from moesaic.backends.base import Backend
from moesaic.errors import ConfigError, MoesaicError
from moesaic.eval.answerers import Answerer, BackendAnswerer, make_answerer
from moesaic.eval.cache import AnswerCache, CachedAnswer
from moesaic.eval.config import EvalConfig, EvalModel
from moesaic.eval.data import Sample, load_samples
from moesaic.eval.measure import cuda_peak_bytes, peak_rss_bytes, percentile, release_memory, reset_peak_memory
from moesaic.eval.plot import PLOT_NAME, plot_pareto
from moesaic.eval.report import REPORT_FILES, write_reports
from moesaic.eval.results import DatasetScores, EvalResult, ModelResult, SampleRecord, pareto_front
from moesaic.eval.judge import Judge, agreement
from moesaic.eval.scoring import DatasetPlan, check_metrics, mean_scores, plan_dataset, score_sample
from moesaic.progress import progress

__all__ = ["evaluate", "EvalConfig", "EvalResult"]

log = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass
class _ModelRun:
    """One model's run in progress: the answerer is loaded on first need."""

    spec: EvalModel
    provided: Answerer | None
    answerer: Answerer | None = None
    hits: int = 0
    calls: int = 0
    load_s: float | None = None
    warmed: set[str] = field(default_factory=set)

    def get(self, sample: Sample, config: EvalConfig, dataset: str) -> Answerer:
        """Load on first need (timed), then, on each dataset's first asked sample, ``config.warmup`` untimed
        requests, so lazy set-up costs (first-call kernels, connection set-up, and the starter experts each
        dataset's questions route to) do not land in a sample's latency."""
        if self.answerer is None:
            start = time.perf_counter()
            self.answerer = self.provided or make_answerer(self.spec)
            if self.provided is None:
                self.load_s = time.perf_counter() - start
        if dataset not in self.warmed:
            self.warmed.add(dataset)
            for _ in range(config.warmup):
                self.answerer.answer(sample, config.generation)
        return self.answerer


def _as_answerer(value: Answerer | Backend) -> Answerer:
    return value if isinstance(value, Answerer) else BackendAnswerer(value)


def _ask(run: _ModelRun, config: EvalConfig, dataset: str, sample: Sample, cache: AnswerCache) -> CachedAnswer:
    gen_hash = config.generation_hash(run.spec)
    hit = cache.get(run.spec.name, dataset, sample.id, gen_hash, sample.fingerprint())
    if hit is not None:
        run.hits += 1
        return hit
    where = f"model {run.spec.name!r}, dataset {dataset!r}, sample {sample.id!r}"
    try:
        answerer = run.get(sample, config, dataset)
        start = time.perf_counter()
        answer = answerer.answer(sample, config.generation)
        latency = time.perf_counter() - start
    except MoesaicError as exc:  # say which sample failed, keep the error's type and hint
        exc.message = f"{where}: {exc.message}"
        exc.args = (exc.message,)
        raise
    except Exception as exc:
        exc.add_note(f"while evaluating {where}")
        raise
    run.calls += 1
    entry = CachedAnswer(model=run.spec.name, dataset=dataset, sample_id=sample.id, gen_hash=gen_hash,
                         fingerprint=sample.fingerprint(), text=answer.text, prompt_tokens=answer.prompt_tokens,
                         completion_tokens=answer.completion_tokens, latency_s=latency,
                         peak_rss_bytes=peak_rss_bytes(), cuda_peak_bytes=cuda_peak_bytes())
    cache.put(entry)
    return entry


def _record(config: EvalConfig, plan: DatasetPlan, spec: EvalModel, sample: Sample, got: CachedAnswer,
            cached: bool, judge: Judge | None) -> SampleRecord:
    scores, fields, primary = score_sample(config, plan, sample, got.text)
    if judge is not None and sample.kind == "qa":
        scores["judge"] = judge.grade(sample.question, sample.references, got.text)
    return SampleRecord(
        model=spec.name, dataset=plan.name, sample_id=sample.id, question=sample.question, answer=got.text,
        references=list(sample.references), attributes=dict(sample.attributes), scores=scores,
        field_scores=fields, primary=primary, latency_s=got.latency_s,
        prompt_tokens=got.prompt_tokens, completion_tokens=got.completion_tokens, cached=cached,
    )


def _dataset_scores(plan: DatasetPlan, samples: list[Sample], recs: list[SampleRecord]) -> DatasetScores:
    kinds = {s.kind for s in samples}
    label = plan.metric if "qa" in kinds else "attribute_accuracy"
    if kinds == {"qa", "attributes"}:
        label += "/attribute_accuracy"
    metrics = mean_scores([r.scores for r in recs])
    judged = [r for r in recs if "judge" in r.scores]
    return DatasetScores(
        dataset=plan.name, samples=len(recs), rows=plan.rows, primary_metric=label, chosen_by=plan.chosen_by,
        primary=sum(r.primary for r in recs) / len(recs), latency_p50_s=percentile([r.latency_s for r in recs], 50),
        strict_metric=plan.strict,
        strict=metrics.get(plan.strict) if plan.strict else None, metrics=metrics,
        field_accuracy=mean_scores([r.field_scores for r in recs]),
        judge_agreement=agreement([r.scores["judge"] for r in judged], [r.primary for r in judged]),
    )


def _summarise(spec: EvalModel, run: _ModelRun, entries: list[CachedAnswer], per_dataset: list[DatasetScores],
               kind: str) -> ModelResult:
    latencies = [e.latency_s for e in entries]
    mean_latency = sum(latencies) / len(latencies)
    tokens = sum(e.completion_tokens for e in entries)
    rss = [e.peak_rss_bytes for e in entries if e.peak_rss_bytes is not None]
    cuda = [e.cuda_peak_bytes for e in entries if e.cuda_peak_bytes is not None]
    local = kind == "local"
    return ModelResult(
        name=spec.name, kind=kind, samples=len(entries), cache_hits=run.hits, model_calls=run.calls, load_s=run.load_s,
        accuracy=sum(d.primary for d in per_dataset) / len(per_dataset),
        latency_mean_s=mean_latency, latency_p50_s=percentile(latencies, 50), latency_p95_s=percentile(latencies, 95),
        tokens_per_s=tokens / sum(latencies) if tokens and sum(latencies) > 0 else None,
        peak_rss_mb=max(rss) / MB if rss and local else None,
        cuda_peak_mb=max(cuda) / MB if cuda and local else None,
        price_per_hour=spec.price_per_hour,
        cost_per_1k=spec.price_per_hour * mean_latency * 1000 / 3600 if spec.price_per_hour is not None else None,
        datasets=per_dataset,
    )


def _run_model(config: EvalConfig, run: _ModelRun, datasets: dict[str, list[Sample]], plans: dict[str, DatasetPlan],
               cache: AnswerCache, judge: Judge | None) -> tuple[ModelResult, list[SampleRecord]]:
    spec = run.spec
    reset_peak_memory()
    entries: list[CachedAnswer] = []
    records: list[SampleRecord] = []
    per_dataset: list[DatasetScores] = []
    try:
        for name, samples in datasets.items():
            recs = []
            for sample in progress(samples, desc=f"{spec.name} / {name}", unit="sample"):
                hits_before = run.hits
                got = _ask(run, config, name, sample, cache)
                entries.append(got)
                recs.append(_record(config, plans[name], spec, sample, got, run.hits > hits_before, judge))
            per_dataset.append(_dataset_scores(plans[name], samples, recs))
            records += recs
    finally:
        if run.answerer is not None and run.provided is None:
            run.answerer.close()
    kind = "endpoint" if spec.is_endpoint else "local"
    return _summarise(spec, run, entries, per_dataset, kind), records


def evaluate(config: EvalConfig, *, answerers: Mapping[str, Answerer | Backend] | None = None) -> EvalResult:
    """Compare models on cost, latency and accuracy; write results.{json,csv,md}, predictions and a plot.

    Each dataset is ranked by one metric, chosen from its rows unless ``config.primary_metric`` is set
    (see :mod:`moesaic.eval.scoring`); ``result.ranking`` says which. With ``config.judge``, a grader model
    scores every question row too, and its agreement with that metric is reported.

    ``answerers`` (library use) maps model names to already-loaded backends or answerers to use instead of
    loading those models; they are not closed.
    """
    provided = {k: _as_answerer(v) for k, v in (answerers or {}).items()}
    unknown = sorted(set(provided) - {m.name for m in config.models})
    if unknown:
        raise ConfigError(f"answerers given for models not in the config: {', '.join(unknown)}",
                          "key answerers by the models[].name they stand for")
    datasets = {d.name: load_samples(d, config.max_samples) for d in config.datasets}
    check_metrics(config, datasets)
    plans = {name: plan_dataset(config, name, samples) for name, samples in datasets.items()}
    for plan in plans.values():
        log.info("%s", plan.describe())
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(out, enabled=config.use_cache)
    judge = Judge(config.judge, out, use_cache=config.use_cache) if config.judge is not None else None
    results: list[ModelResult] = []
    records: list[SampleRecord] = []
    try:
        for spec in config.models:
            run = _ModelRun(spec, provided.get(spec.name))
            result, recs = _run_model(config, run, datasets, plans, cache, judge)
            log.info("%s: accuracy %.3f, p50 %.3fs, %d cache hits", spec.name, result.accuracy,
                     result.latency_p50_s, result.cache_hits)
            results.append(result)
            records += recs
            del run
            release_memory()
    finally:
        if judge is not None:
            judge.close()
    files = {name: str(out / filename) for name, filename in REPORT_FILES.items()}
    files["plot"] = str(out / PLOT_NAME)
    files["config"] = str(config.save(out))
    judge_info = None if judge is None else {"model": judge.config.model, "prompt_version": judge.config.prompt_version,
                                             "calls": judge.calls, "cache_hits": judge.hits}
    result = EvalResult(out=str(out), models=results, cache_hits=sum(m.cache_hits for m in results),
                        pareto=pareto_front(results), ranking=[p.describe() for p in plans.values()],
                        judge=judge_info, files=files)
    plot_pareto(result, out / PLOT_NAME)
    write_reports(result, records, out)
    return result
