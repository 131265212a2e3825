"""Constants and small helpers shared by the MoE test modules (importable, unlike conftest)."""

from __future__ import annotations

import torch

FAMILY_OF = {"mixtral": "idefics3", "mixtral_llava": "llava", "qwen3_vl_moe": "qwen3_vl", "generic": "idefics3"}
ARCH_OF = {"mixtral": "mixtral", "mixtral_llava": "mixtral", "qwen3_vl_moe": "qwen3_vl_moe", "generic": "generic"}


def token_ids(seed: int = 0, length: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(10, 200, (1, length), generator=gen)  # (batch, seq)
