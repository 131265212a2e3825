"""`make run`'s banner points at a real sample photo and the right URLs."""

from __future__ import annotations

from PIL import Image

from moesaic.demo import DemoConfig, banner, sample_image


def test_banner_has_playground_and_ask_line() -> None:
    text = banner(DemoConfig(port=9123, api_key="k1"))
    assert "playground:  http://127.0.0.1:9123/" in text
    assert f"moesaic ask {sample_image()} \"What is in this image?\" --endpoint http://127.0.0.1:9123 --api-key k1" in text
    with Image.open(sample_image()) as img:
        assert img.format == "JPEG" and min(img.size) > 100
