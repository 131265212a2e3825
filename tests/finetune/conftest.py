"""Fixtures of the fine-tuning tests: tiny saved VLMs and synthetic 'colour of the shape' data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ft_helpers import write_colour_data


@pytest.fixture(scope="session")
def ft_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``ft_model(family) -> Path``: a saved tiny model (seed 0), from moesaic.testing when present."""
    try:
        from moesaic.testing import make_tiny_model
    except ImportError:  # the shared factories have not landed: our stand-in
        from tiny_models import make_tiny_model  # type: ignore[no-redef]
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = make_tiny_model(family, tmp_path_factory.mktemp(f"ft-{family}"), seed=0)
        return cache[family]

    return get


@pytest.fixture()
def colour_data(tmp_path: Path) -> Path:
    return write_colour_data(tmp_path / "data", 48)
