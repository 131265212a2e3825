"""Configs of the fine-tuning commands: ``finetune``, ``export-adapter``, ``eval-attributes``.

Imports no torch. Every field has a default that works for a small run except the model, the data and the
output folder. YAML keys are the field names; flags are ``--field-name`` and ``--lora.rank 16``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from moesaic.config import CommandConfig, FrozenModel

__all__ = ["LoraSettings", "QuantSettings", "BudgetSettings", "FinetuneConfig", "ExportAdapterConfig", "EvalAttributesConfig"]


class LoraSettings(FrozenModel):
    """LoRA (Hu et al., 2021, arXiv:2106.09685) on linear layers, through PEFT."""

    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="'all-linear' or module-name suffixes such as [q_proj, v_proj]"
    )
    include_vision: bool = Field(False, description="also put LoRA on the vision tower's linear layers")
    modules_to_save: list[str] = Field(default_factory=list, description="module names trained in full")


class QuantSettings(FrozenModel):
    """The frozen 4-bit base of ``method: qlora`` (QLoRA, Dettmers et al., 2023, arXiv:2305.14314), via bitsandbytes."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: NormalFloat4 or FP4")
    double_quant: bool = Field(True, description="also quantise the per-block scales (double quantisation)")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the de-quantised matmuls; auto: bfloat16 on a GPU that has it, else float32")
    skip_modules: list[str] = Field(default_factory=list,
                                    description="modules kept in full precision besides the LM head (names or their last parts: [merger])")


class BudgetSettings(FrozenModel):
    """The per-sample vision-token budget, applied before training (see :mod:`moesaic.finetune.budget`)."""

    max_pixels: int | None = Field(None, ge=64, description="downscale any image above this many pixels")
    max_image_tokens: int | None = Field(None, ge=1, description="downscale a sample's images to fit")
    max_length: int | None = Field(None, ge=8, description="longest tokenised sample (text + image tokens)")
    too_long: Literal["drop", "error"] = Field("error", description="what to do with a sample over max_length")
    min_side: int = Field(16, ge=1, description="never shrink an image's shorter side below this")


class FinetuneConfig(CommandConfig):
    """``moesaic finetune CONFIG.yaml``."""

    base_model: str = Field(description="folder of a transformers image-text-to-text model")
    data: str = Field(description="training data: .jsonl or .csv")
    output_dir: str = Field(description="where checkpoints, metrics and the adapter/model go")
    eval_data: str | None = Field(None, description="held-out data; default: split eval_fraction off data")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="ignored when eval_data is given")
    image_root: str | None = Field(None, description="relative image paths are resolved here (default: data's folder)")
    method: Literal["lora", "qlora", "full"] = Field("lora", description="qlora: LoRA on a 4-bit frozen base")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: QuantSettings = Field(default_factory=QuantSettings, description="method: qlora only")
    freeze_vision: bool = Field(True, description="full training: keep the vision tower frozen")
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(1, ge=1, description="samples per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    seed: int = 0
    save_every: int = Field(0, ge=0, description="checkpoint every N optimizer steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    resume: bool = Field(True, description="continue from the latest checkpoint in output_dir")
    log_every: int = Field(1, ge=1)
    eval_generate: bool = Field(True, description="after training, generate answers on the eval split")
    max_new_tokens: int = Field(24, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in backward: less memory, slower (default: on for qlora only)")


class ExportAdapterConfig(CommandConfig):
    """``moesaic export-adapter RUN_OR_ADAPTER OUTPUT``."""

    positional: ClassVar[tuple[str, ...]] = ("adapter", "output")

    adapter: str = Field(description="a finetune output folder or a PEFT adapter folder")
    output: str = Field(description="folder for the merged full model")
    base_model: str | None = Field(None, description="override the base model recorded in the adapter")
    verify: bool = Field(True, description="compare merged and adapter logits on a probe input")
    overwrite: bool = True


class EvalAttributesConfig(CommandConfig):
    """``moesaic eval-attributes MODEL DATA``."""

    positional: ClassVar[tuple[str, ...]] = ("model", "data")

    model: str = Field(description="a finetune output folder, a merged model or any VLM folder")
    data: str = Field(description="rows with images and an 'attributes' object (.jsonl or .csv)")
    schema_path: str | None = Field(None, description="JSON schema of the attributes (default: inferred)")
    strategy: Literal["constrained", "generate"] = Field(
        "constrained", description="constrained: score schema values; generate: free text, validate, repair"
    )
    image_root: str | None = None
    max_new_tokens: int = Field(64, ge=1)
    output: str | None = Field(None, description="write report.json and predictions.jsonl here")
