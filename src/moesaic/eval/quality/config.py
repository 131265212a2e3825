"""Config of the merged-model quality study (``benchmarks/moe_quality.py``). Imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from moesaic.config import CommandConfig

__all__ = ["QualityStudyConfig", "DEFAULT_DOMAINS"]

DEFAULT_DOMAINS: tuple[str, ...] = ("colour", "shape", "position", "count")


class QualityStudyConfig(CommandConfig):
    """Base VLM → one expert per synthetic domain → three merges → every model on every domain."""

    out: str = Field("runs/quality", description="folder for models, data, results.json and the heatmaps")
    domains: list[str] = Field(default_factory=lambda: list(DEFAULT_DOMAINS), min_length=2)
    seed: int = 0
    # the tiny base (idefics3: Llama text model, so the MoE is a native Mixtral-text Idefics3)
    hidden_size: int = Field(128, ge=16)
    intermediate_size: int = Field(256, ge=16)
    num_layers: int = Field(3, ge=1)
    init_range: float = Field(0.02, gt=0, description="std of the random base weights (0.2: token states ignore "
                              "their context, so no per-token router separates the domains)")
    image_size: int = Field(32, ge=16, description="side of the generated images in pixels")
    # domain-neutral caption pre-training of the random base (0 steps: experts start from the random base)
    pretrain_steps: int = Field(600, ge=0)
    pretrain_samples: int = Field(128, ge=1, description="caption rows per domain (another seed)")
    pretrain_lr: float = Field(2e-3, gt=0)
    # data
    train_samples: int = Field(384, ge=8, description="training rows per domain")
    test_samples: int = Field(96, ge=4, description="held-out rows per domain (another seed)")
    gate_samples: int = Field(64, ge=2, description="rows per domain used for gate prompts and gate training")
    # expert fine-tuning: only the text MLPs change (gate/up trained in full, down_proj by a merged LoRA)
    steps: int = Field(600, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(8, ge=1)
    lora_rank: int = Field(16, ge=1, description="rank of the down_proj LoRA (merged into the expert)")
    # merging
    experts_per_token: int = Field(1, ge=1)
    gate_prompts: int = Field(8, ge=1, description="image+question prompts per expert for hidden gates")
    gate_steps: int = Field(600, ge=1)
    gate_lr: float = Field(2e-2, gt=0)
    gate_batch_size: int = Field(128, ge=1)
    gate_pool: Literal["mean", "token"] = Field("token", description="token: per-token router training (mean: pooled)")
    max_new_tokens: int = Field(12, ge=1, description="answers are spelled character by character")
    eval_batch_size: int = Field(16, ge=1, description="prompts generated together (left-padded)")
    routing_samples: int = Field(24, ge=1, description="test rows per domain in the routing reports")

    @model_validator(mode="after")
    def _check(self) -> "QualityStudyConfig":
        from moesaic.eval.quality.domains import DOMAINS

        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; choose from {list(DOMAINS)}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("domains must not repeat")
        if self.experts_per_token > len(self.domains):
            raise ValueError(f"experts_per_token={self.experts_per_token} exceeds the {len(self.domains)} domains")
        return self
