"""Fixtures of the serve tests; the helpers live in serve_helpers.py (a unique module name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_helpers import start_image_server


@pytest.fixture(scope="session")
def image_server() -> Iterator[str]:
    """Base URL of a loopback image server (/red.png, /green.png, /blue.png, /slow/...)."""
    httpd, url = start_image_server()
    yield url
    httpd.shutdown()


@pytest.fixture(autouse=True)
def _not_in_sagemaker(monkeypatch, tmp_path):
    """Tests decide themselves whether they run 'inside SageMaker'."""
    from moesaic.serve import settings

    monkeypatch.setattr(settings, "SAGEMAKER_ROOT", tmp_path / "no-opt-ml")
    for key in [k for k in __import__("os").environ if k.startswith(("SM_", "SAGEMAKER_"))]:
        monkeypatch.delenv(key)
