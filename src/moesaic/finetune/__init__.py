"""Fine-tuning VLMs: data validation, the vision-token budget, LoRA/full training, adapter export and the
attribute task. Submodules import torch lazily; ``import moesaic.finetune`` stays light."""

from moesaic.finetune.config import (
    BudgetSettings,
    EvalAttributesConfig,
    ExportAdapterConfig,
    FinetuneConfig,
    LoraSettings,
    QuantSettings,
)

__all__ = ["BudgetSettings", "EvalAttributesConfig", "ExportAdapterConfig", "FinetuneConfig", "LoraSettings",
           "QuantSettings"]
