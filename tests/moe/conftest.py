"""Shared helpers for the MoE tests: experts that differ from the base only in their MLPs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from moesaic.testing import copy_processor



@pytest.fixture(scope="session")
def mlp_expert(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, int], Path]:
    """``mlp_expert(base_dir, seed)``: a copy of the base whose decoder MLPs got random noise (cached)."""
    from moesaic.moe.layers import find_decoder_layers
    from moesaic.moe.loading import load_dense

    cache: dict[tuple[str, int], Path] = {}

    def make(base: Path, seed: int) -> Path:
        key = (str(base), seed)
        if key not in cache:
            model = load_dense(str(base))
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for mlp in find_decoder_layers(model).mlps():
                    for p in mlp.parameters():
                        p.add_(torch.randn(p.shape, generator=gen) * 0.5)
            out = tmp_path_factory.mktemp(f"expert-{seed}")
            model.save_pretrained(out)
            copy_processor(base, out)
            cache[key] = out
        return cache[key]

    return make
