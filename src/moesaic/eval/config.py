"""``moesaic eval`` config: which models, on which datasets, scored how, written where.

Example (``moesaic eval eval.yaml``; flags override keys, e.g. ``--max-samples 50``)::

    models:
      - {name: starter, model: starter, price_per_hour: 0.10}
      - {name: moe, model: ./merged-moe, dtype: bfloat16, price_per_hour: 1.20}
      - {name: remote, endpoint: "http://localhost:8080/v1", endpoint_model: moe, price_per_hour: 2.50}
    datasets:
      - {name: docvqa-mini, path: data/docvqa.jsonl}     # image + question + reference(s)
      - {name: products, path: data/products.jsonl}      # image + attributes
    metrics: [normalized_match, anls, token_f1, attribute_accuracy]
    out: eval_out
    generation: {max_new_tokens: 32}

Relative paths are read from the current folder; image paths inside a JSONL from the JSONL's folder.
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

__all__ = ["EvalConfig", "EvalModel", "EvalDataset", "DEFAULT_METRICS"]

DEFAULT_METRICS: tuple[MetricName, ...] = ("exact_match", "normalized_match", "anls", "token_f1",
                                           "attribute_accuracy")


class EvalModel(FrozenModel):
    """One contender: a local model (``model``) or an OpenAI-compatible endpoint (``endpoint``)."""

    name: str = Field(min_length=1, description="label in the tables and plot; also the cache key")
    model: str | None = Field(None, description="'starter', a local model folder or a hub id")
    backend: str | None = Field(None, description="backend name (default: chosen from the model)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="transformers models: load the linear layers in 4 or 8 bits (bitsandbytes)")
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible API, e.g. http://host:8080/v1")
    api_key: SecretStr | None = Field(
        None, exclude=True, description="API key for the endpoint (default: $OPENAI_API_KEY); never written out"
    )
    endpoint_model: str | None = Field(None, description="model name sent to the endpoint (default: name)")
    price_per_hour: float | None = Field(None, ge=0, description="hardware price, currency per hour")
    timeout_s: float = Field(120.0, gt=0, description="endpoint request timeout")

    @model_validator(mode="after")
    def _one_source(self) -> "EvalModel":
        if (self.model is None) == (self.endpoint is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'model' or 'endpoint'")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"model {self.name!r}: endpoint must be an http(s) URL, got {self.endpoint!r}")
        return self

    @property
    def is_endpoint(self) -> bool:
        return self.endpoint is not None

    def identity(self) -> dict[str, object]:
        """What decides the answers (not the price): part of every cache key. For a local model folder
        this includes a stamp of its files (name, size, modification time), so retrained weights saved
        at the same path are asked again."""
        ident: dict[str, object] = self.model_dump(include={"model", "backend", "dtype", "endpoint", "endpoint_model"})
        if self.quantization != "none":  # quantised answers differ; unquantised keys stay as they were
            ident["quantization"] = self.quantization
        if self.model is not None and Path(self.model).is_dir():
            ident["files"] = _folder_stamp(Path(self.model))
        return ident


class EvalDataset(FrozenModel):
    """A JSONL file: ``{"image", "question", "reference" | "references"}`` or ``{"image", "attributes"}``."""

    name: str = Field(min_length=1)
    path: Path = Field(description="JSONL file; relative image paths are read from its folder")
    prompt: str | None = Field(
        None, description="question for attribute rows without one (default asks for JSON with the fields)"
    )


class EvalConfig(CommandConfig):
    """Compare models on cost, latency and accuracy."""

    positional = ("config_file",)

    config_file: str | None = Field(None, description="YAML file with the eval config (same as --config)")
    models: list[EvalModel] = Field(min_length=1, description="[{name, model | endpoint, dtype, price_per_hour}, ...]")
    datasets: list[EvalDataset] = Field(min_length=1, description="JSONL datasets: [{name, path}]")
    metrics: list[MetricName] = Field(default_factory=lambda: list(DEFAULT_METRICS),
                                      description="metrics to compute where they apply")
    primary_metric: MetricName | None = Field(
        None, description="metric on the plot's accuracy axis (default: first metric that applies)"
    )
    out: Path = Field(Path("eval_out"), description="output folder (results, plot, cache)")
    max_samples: int | None = Field(None, ge=1, description="use at most this many samples per dataset")
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_new_tokens=32))
    use_cache: bool = Field(True, description="reuse answers cached in the output folder")
    warmup: int = Field(1, ge=0, description="untimed requests per model before the timed ones")
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
