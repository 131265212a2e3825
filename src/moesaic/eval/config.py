"""``moesaic eval`` config: which models, on which datasets, scored how, written where.

Example (``moesaic eval eval.yaml``; flags override keys, e.g. ``--max-samples 50``)::

    models:
      - {name: starter, model: starter, price_per_hour: 0.10}
      - {name: starter-llm, model: "starter:llm"}                  # any spec `moesaic ask --model` takes
      - {name: moe, model: ./merged-moe, dtype: bfloat16, routing: sequence, price_per_hour: 1.20}
      - {name: remote, endpoint: "http://localhost:8080", model: moe, price_per_hour: 2.50}
    datasets:
      - {name: docvqa-mini, path: data/docvqa.jsonl}     # image + question + reference(s)
      - {name: products, path: data/products.jsonl}      # image + attributes
    out: eval_out
    generation: {max_new_tokens: 32}
    judge: {endpoint: "http://localhost:9000/v1", model: grader}    # optional, off by default

Models are resolved exactly as ``moesaic ask`` resolves ``--model`` (one backend registry: ``starter``,
``starter:llm``, a hub id, a folder, a merged MoE); with ``endpoint``, ``model`` (or ``endpoint_model``) is
the name sent to the server, as with ``moesaic ask --endpoint URL --model NAME``, and the URL may end in
``/v1`` or not. Relative paths are read from the current folder; image paths inside a JSONL from the
JSONL's folder. Without ``primary_metric``, each dataset is ranked by a metric chosen from its rows
(:mod:`moesaic.eval.scoring`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from moesaic.backends.base import GenerationParams
from moesaic.config import CommandConfig, FrozenModel, load_yaml
from moesaic.eval.metrics import MetricName

__all__ = ["EvalConfig", "EvalModel", "EvalDataset", "JudgeConfig", "DEFAULT_METRICS", "openai_base_url"]

DEFAULT_METRICS: tuple[MetricName, ...] = ("exact_match", "normalized_match", "contains_match", "relaxed_numeric",
                                           "anls", "token_f1", "attribute_accuracy")


def openai_base_url(endpoint: str) -> str:
    """``http://host:port``, ``.../`` and ``.../v1`` all name the same server; the SDK wants ``.../v1``."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _check_url(url: str, what: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http(s) URL, got {url!r}")


class EvalModel(FrozenModel):
    """One contender: a local model (``model``) or an OpenAI-compatible endpoint (``endpoint``)."""

    name: str = Field(min_length=1, description="label in the tables and plot; also the cache key")
    model: str | None = Field(
        None, description="what `moesaic ask --model` takes: 'starter', 'starter:llm', a hub id, a folder, a merged "
                          "MoE; with 'endpoint', the model name sent to the server")
    backend: str | None = Field(None, description="backend name (default: chosen from the model)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    routing: Literal["token", "sequence", "sequence_first"] = Field(
        "token", description="merged MoEs: route per token, or one expert choice per request (as in ask)")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="transformers models: load the linear layers in 4 or 8 bits (bitsandbytes)")
    endpoint: str | None = Field(None, description="an OpenAI-compatible server, e.g. http://host:8080 (or .../v1)")
    api_key: SecretStr | None = Field(
        None, exclude=True, description="API key for the endpoint (default: $OPENAI_API_KEY); never written out"
    )
    endpoint_model: str | None = Field(
        None, description="model name sent to the endpoint (default: 'model', else the server's own if it serves one)")
    price_per_hour: float | None = Field(None, ge=0, description="hardware price, currency per hour")
    timeout_s: float = Field(120.0, gt=0, description="endpoint request timeout")

    @model_validator(mode="after")
    def _one_source(self) -> "EvalModel":
        if self.model is None and self.endpoint is None:
            raise ValueError(f"model {self.name!r}: give 'model' (a local model) or 'endpoint' (a server)")
        if self.endpoint is not None:
            _check_url(self.endpoint, f"model {self.name!r}: endpoint")
            if self.model is not None and self.endpoint_model is not None and self.model != self.endpoint_model:
                raise ValueError(f"model {self.name!r}: with an endpoint, 'model' and 'endpoint_model' both name "
                                 "the served model; give one")
        return self

    @property
    def is_endpoint(self) -> bool:
        return self.endpoint is not None

    @property
    def served_model(self) -> str | None:
        """The model name sent to the endpoint when the config names one."""
        return self.endpoint_model or (self.model if self.is_endpoint else None)

    def identity(self) -> dict[str, object]:
        """What decides the answers (not the price): part of every cache key. For a local model folder
        this includes a stamp of its files (name, size, modification time), so retrained weights saved
        at the same path are asked again."""
        ident: dict[str, object] = self.model_dump(include={"model", "backend", "dtype", "endpoint", "endpoint_model"})
        if self.routing != "token":  # absent for the default, so earlier caches stay valid
            ident["routing"] = self.routing
        if self.quantization != "none":  # quantised answers differ; unquantised keys stay as they were
            ident["quantization"] = self.quantization
        if not self.is_endpoint and self.model is not None and Path(self.model).is_dir():
            ident["files"] = _folder_stamp(Path(self.model))
        return ident


class EvalDataset(FrozenModel):
    """A JSONL file: ``{"image", "question", "reference" | "references"}`` or ``{"image", "attributes"}``."""

    name: str = Field(min_length=1)
    path: Path = Field(description="JSONL file; relative image paths are read from its folder")
    prompt: str | None = Field(
        None, description="question for attribute rows without one (default asks for JSON with the fields)"
    )


class JudgeConfig(FrozenModel):
    """An OpenAI-compatible model that grades answers (see :mod:`moesaic.eval.judge`); off unless given."""

    endpoint: str = Field(description="the grader's server, e.g. http://localhost:9000 (or .../v1)")
    model: str = Field(min_length=1, description="the grader's model name on that server")
    api_key: SecretStr | None = Field(None, exclude=True, description="default: $OPENAI_API_KEY; never written out")
    prompt_version: Literal["v1"] = Field("v1", description="the grading prompt (versioned; part of the cache key)")
    timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _url(self) -> "JudgeConfig":
        _check_url(self.endpoint, "judge.endpoint")
        return self


class EvalConfig(CommandConfig):
    """Compare models on cost, latency and accuracy."""

    positional = ("config_file",)

    config_file: str | None = Field(None, description="YAML file with the eval config (same as --config)")
    models: list[EvalModel] = Field(min_length=1, description="[{name, model | endpoint, dtype, price_per_hour}, ...]")
    datasets: list[EvalDataset] = Field(min_length=1, description="JSONL datasets: [{name, path}]")
    metrics: list[MetricName] = Field(default_factory=lambda: list(DEFAULT_METRICS),
                                      description="metrics to compute where they apply")
    primary_metric: MetricName | None = Field(
        None, description="metric that ranks question rows (default: chosen per dataset from its rows)"
    )
    judge: JudgeConfig | None = Field(None, description="optional grader: {endpoint, model}; off by default")
    out: Path = Field(Path("eval_out"), description="output folder (results, plot, cache)")
    max_samples: int | None = Field(None, ge=1, description="use at most this many samples per dataset")
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_new_tokens=32))
    use_cache: bool = Field(True, description="reuse answers cached in the output folder")
    warmup: int = Field(1, ge=0, description="untimed requests per model and dataset before the timed ones")
    anls_threshold: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: object) -> object:
        """``moesaic eval CONFIG.yaml``: the positional file is read, and flags override its keys."""
        if isinstance(data, dict) and data.get("config_file"):
            return _deep_merge(load_yaml(str(data["config_file"])), data)
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> "EvalConfig":
        for kind, names in (("model", [m.name for m in self.models]), ("dataset", [d.name for d in self.datasets])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        if not self.metrics:
            raise ValueError("give at least one metric")
        return self

    def generation_hash(self, model: EvalModel) -> str:
        """Short hash of everything besides the sample that decides an answer."""
        blob = json.dumps({"gen": self.generation.model_dump(mode="json"), "model": model.identity()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _folder_stamp(folder: Path) -> str:
    """Hash of every file's relative name, size and mtime under ``folder`` (no file contents read)."""
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            entries.append(f"{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
