"""Config of the real-decoder quality study (``benchmarks/moe_quality_real.py``). Imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from moesaic.config import CommandConfig

__all__ = ["RealStudyConfig", "DEFAULT_TEXT_DOMAINS"]

DEFAULT_TEXT_DOMAINS: tuple[str, ...] = ("garment", "chart", "sign", "micrograph")


class RealStudyConfig(CommandConfig):
    """Phase A: SmolLM2-135M-Instruct (text) → experts per domain → merges → validation grid → test rows."""

    out: str = Field("runs/quality_real", description="folder for the base, data, experts, merges and scores")
    base: Literal["smollm2", "tiny"] = Field("smollm2", description="smollm2: the shipped GGUF; tiny: a random "
                                             "2-layer Llama (plumbing checks only)")
    stage: Literal["validation", "test", "all"] = Field(
        "all", description="validation: build everything, score the grid, write the selection; test: score the "
        "selected models on the test rows (needs the selection file); all: both")
    selection: str = Field("benchmarks/results/quality_real_selection.json",
                           description="the selection file (choices made on validation)")
    require_committed: bool = Field(True, description="the test stage refuses a selection file that git does not "
                                    "hold unmodified")
    results: str = Field("benchmarks/results/quality_real.json", description="the results JSON (test stage)")
    domains: list[str] = Field(default_factory=lambda: list(DEFAULT_TEXT_DOMAINS), min_length=2)
    seed: int = 0
    train_rows: int = Field(160, ge=8, description="training rows per domain")
    validation_rows: int = Field(100, ge=4, description="validation rows per domain (the grid is scored on them)")
    test_rows: int = Field(200, ge=4, description="test rows per domain (only the selected models)")
    expert_settings: list[Literal["lora", "mlp"]] = Field(default_factory=lambda: ["lora", "mlp"], min_length=1)
    upper_layers: int = Field(8, ge=1, description="LoRA on the upper N decoder layers only")
    lora_rank: int = Field(16, ge=1)
    steps: int = Field(30, ge=1, description="optimizer steps per expert")
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    gate_prompts: int = Field(8, ge=1, description="training prompts per domain for the hidden gates")
    ties_densities: list[float] = Field(default_factory=lambda: [0.3, 0.7], min_length=1)
    dare_densities: list[float] = Field(default_factory=lambda: [0.3, 0.7], min_length=1)
    eval_batch_size: int = Field(16, ge=1)
    routing_rows: int = Field(24, ge=1, description="validation rows per domain in the routing heatmaps")
    bootstrap_samples: int = Field(1000, ge=10)

    @model_validator(mode="after")
    def _check(self) -> "RealStudyConfig":
        from moesaic.eval.quality_real.domains import TEXT_DOMAINS

        unknown = [d for d in self.domains if d not in TEXT_DOMAINS]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; choose from {list(TEXT_DOMAINS)}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("domains must not repeat")
        if any(not 0 < d <= 1 for d in (*self.ties_densities, *self.dare_densities)):
            raise ValueError("densities must lie in (0, 1]")
        return self
