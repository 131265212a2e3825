"""Configs of the MoE commands (merge, train-gates, route-report). Imports no torch.

The merge YAML uses mergekit-moe's keys (``base_model``, ``experts[].source_model``,
``positive_prompts``, ``negative_prompts``, ``gate_mode``, ``experts_per_token``) so mergekit users feel
at home, plus ``positive_images`` and VLM output architectures. ``moesaic merge merge.yaml --out DIR``
(the same as ``--config merge.yaml``; flags such as ``--experts-per-token 1`` override the file)::

    base_model: ./smolvlm-base
    gate_mode: hidden            # hidden | hidden_avg | random | uniform
    experts_per_token: 2
    output_architecture: auto    # auto | mixtral | qwen2_moe | qwen3_vl_moe | qwen3_5_moe | generic
                                 # (which fits which model: docs/architectures.md)
    shared_weights: base         # base | average (non-MLP weights)
    dtype: auto
    experts:
      - source_model: ./smolvlm-charts
        name: charts
        positive_prompts: ["What is the highest bar in this chart?"]
        positive_images: [charts/0.png]
        negative_prompts: ["Describe this photo of a street."]
      - source_model: ./smolvlm-ocr
        name: ocr
        positive_prompts: ["Read the text on this receipt."]
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from moesaic.config import CommandConfig, FrozenModel

__all__ = [
    "ExpertSpec",
    "MergeConfig",
    "TrainGatesConfig",
    "RouteReportConfig",
    "GateMode",
    "OutputArchitectureName",
    "PROMPT_GATE_MODES",
    "MERGE_CONFIG_NAME",
]

GateMode = Literal["hidden", "hidden_avg", "random", "uniform"]
OutputArchitectureName = Literal["auto", "mixtral", "qwen2_moe", "qwen3_vl_moe", "qwen3_5_moe", "generic"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
PROMPT_GATE_MODES: tuple[str, ...] = ("hidden", "hidden_avg")
MERGE_CONFIG_NAME = "merge_config.yaml"  # the merge recipe, kept next to a model whose gates were retrained


class ExpertSpec(FrozenModel):
    """One expert: a fine-tuned copy of the base model, and the prompts that should route to it."""

    source_model: str = Field(min_length=1, description="local folder (or cached hub id) of the expert")
    name: str | None = Field(None, description="label used in reports (default: the folder name)")
    positive_prompts: list[str] = Field(default_factory=list)
    negative_prompts: list[str] = Field(default_factory=list)
    positive_images: list[str] = Field(default_factory=list, description="image paths paired with the prompts")

    @property
    def label(self) -> str:
        return self.name or Path(self.source_model).name or self.source_model


class MergeConfig(CommandConfig):
    """``moesaic merge merge.yaml --out DIR``: build a sparse MoE VLM from a base and its fine-tuned experts."""

    # No positional fields: the CLI then reads `moesaic merge merge.yaml --out DIR` as `--config merge.yaml`.

    base_model: str = Field(min_length=1, description="the dense model the shared (non-MLP) weights come from")
    experts: list[ExpertSpec] = Field(min_length=1, description="one entry per expert")
    gate_mode: GateMode = Field("hidden", description="how router weights are initialised")
    experts_per_token: int = Field(2, ge=1, description="k: experts each token is sent to")
    output_architecture: OutputArchitectureName = Field("auto", description="target MoE family")
    shared_weights: Literal["base", "average"] = Field(
        "base", description="non-MLP weights: the base's, or the mean of the experts'"
    )
    dtype: DType = Field("auto", description="dtype of the written model (auto: the base's)")
    out: str | None = Field(None, description="output folder")
    seed: int = Field(0, description="seed of the random gate mode")
    degenerate_threshold: float = Field(0.95, gt=0, le=1, description="warn when gate cosine exceeds this")
    streaming: bool = Field(
        True, description="write native outputs tensor by tensor from safetensors (false: build in memory)"
    )

    @model_validator(mode="after")
    def _check(self) -> "MergeConfig":
        n = len(self.experts)
        if self.experts_per_token > n:
            raise ValueError(f"experts_per_token={self.experts_per_token} is larger than the {n} experts given")
        if self.gate_mode in PROMPT_GATE_MODES:
            missing = [e.label for e in self.experts if not (e.positive_prompts or e.positive_images)]
            if missing:
                raise ValueError(
                    f"gate_mode={self.gate_mode} needs positive_prompts (or positive_images) for every expert; "
                    f"missing for: {', '.join(missing)}"
                )
        return self


class TrainGatesConfig(CommandConfig):
    """``moesaic train-gates MODEL --data [a.jsonl, b.jsonl]``: train only the router weights of a merged MoE."""

    positional: ClassVar[tuple[str, ...]] = ("model",)

    model: str = Field(min_length=1, description="folder written by `moesaic merge`")
    data: list[str] = Field(min_length=1, description="one JSONL sample file per expert, in expert order")
    objective: Literal["classify", "lm"] = Field("classify", description="gate classifier or next-token loss")
    pool: Literal["mean", "token"] = Field("mean", description="classify: mean-pooled sample or every token")
    steps: int = Field(100, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(8, ge=1)
    load_balance: float = Field(0.0, ge=0, description="lm: weight of the load-balancing loss (0 = off)")
    max_samples: int | None = Field(None, ge=1, description="use at most this many samples per expert")
    save_every: int = Field(50, ge=1, description="steps between resumable checkpoints")
    resume: bool = Field(True, description="continue from a checkpoint left by an interrupted run")
    out: str | None = Field(None, description="output folder (default: update MODEL in place)")
    seed: int = 0


class RouteReportConfig(CommandConfig):
    """``moesaic route-report MODEL --data {math: m.jsonl, chat: c.jsonl} --out DIR``."""

    positional: ClassVar[tuple[str, ...]] = ("model",)

    model: str = Field(min_length=1, description="a merged MoE folder")
    data: dict[str, str] = Field(min_length=1, description="domain name -> JSONL sample file")
    out: str | None = Field(None, description="folder for route_report.json and route_report.png")
    max_samples: int | None = Field(None, ge=1, description="use at most this many samples per domain")
    plot: bool = Field(True, description="write the heatmap PNG (needs matplotlib)")
    count: Literal["content", "all"] = Field(
        "content", description="content: skip chat-template and special tokens (shared by all domains); all: every token"
    )
