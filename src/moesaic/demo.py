"""``make run``: the main job. Serves the offline starter experts (or ``--model``) on loopback and logs the
playground URL and a ready-to-paste ``moesaic ask --endpoint`` line.

The sample photo (scikit-image's ``coffee``, CC0) ships inside the package so the line works offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from moesaic.serve.app import serve
from moesaic.serve.settings import ServeConfig

__all__ = ["DemoConfig", "demo", "sample_image", "banner"]

log = logging.getLogger(__name__)


class DemoConfig(ServeConfig):
    """Serve the starter experts (by default) and show how to call them."""


def sample_image() -> Path:
    """Path of the bundled sample photo."""
    return Path(__file__).with_name("samples") / "coffee.jpg"


def banner(config: ServeConfig) -> str:
    base = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"
    key = f" --api-key {config.api_key}" if config.api_key else ""
    return "\n".join(
        [
            f"moesaic is serving '{config.model_name}' at {base}",
            f"  playground:  {base}/",
            f"  ask it:      moesaic ask {sample_image()} \"What is in this image?\" --endpoint {base}{key}",
            f"  OpenAI SDK:  OpenAI(base_url='{base}/v1', api_key='{config.api_key or 'none'}')",
            "  stop with Ctrl-C",
        ]
    )


def demo(config: DemoConfig) -> None:
    """Serve the starter experts and show the playground URL and a ready-to-paste ask line."""
    log.warning(banner(config))
    serve(config)
