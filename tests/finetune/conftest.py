"""Fixtures of the fine-tuning tests: tiny saved VLMs and synthetic 'colour of the shape' data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ft_helpers import write_colour_data


@pytest.fixture(scope="session")
def ft_model(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], Path]:
    """``ft_model(family) -> Path``: the shared saved tiny model (seed 0); fine-tuning never writes into it."""
    return tiny_model_dir


@pytest.fixture()
def colour_data(tmp_path: Path) -> Path:
    return write_colour_data(tmp_path / "data", 48)
