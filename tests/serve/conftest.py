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
