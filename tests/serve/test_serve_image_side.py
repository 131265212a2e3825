"""The server decodes JPEGs at the model's own image size (reduced-scale decode), read from its processor."""

from __future__ import annotations

import pytest

from moesaic.backends.base import BackendOptions
from moesaic.backends.registry import load_backend
from moesaic.serve.service import model_image_side


@pytest.mark.parametrize(("family", "side"), [("idefics3", 32), ("llava", 32)])
def test_image_side_comes_from_the_processor(family: str, side: int, tiny_model_dir) -> None:  # noqa: ANN001
    from moesaic.serve.app import create_app
    from moesaic.serve.settings import ServeConfig

    model = str(tiny_model_dir(family))
    backend = load_backend(model, BackendOptions())
    assert model_image_side(backend) == side
    app = create_app(ServeConfig(model=model), backend=backend)
    assert app.state.service.policy.target_size == side


def test_image_side_is_unknown_without_a_processor() -> None:
    class NoProcessor:
        processor = None

    assert model_image_side(NoProcessor()) is None  # type: ignore[arg-type]
