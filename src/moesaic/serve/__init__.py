"""Serving: an OpenAI- and SageMaker-compatible HTTP API with dynamic batching, limits and a playground."""

from moesaic.serve.settings import ServeConfig, ServeSettings

__all__ = ["ServeConfig", "ServeSettings", "create_app", "serve", "ask_endpoint"]


def __getattr__(name: str) -> object:
    # Lazy: importing moesaic.serve must not import FastAPI or httpx.
    if name in ("create_app", "serve"):
        from moesaic.serve import app

        return getattr(app, name)
    if name == "ask_endpoint":
        from moesaic.serve.client import ask_endpoint

        return ask_endpoint
    raise AttributeError(f"module 'moesaic.serve' has no attribute {name!r}")
