"""Serving: an OpenAI- and SageMaker-compatible HTTP API with dynamic batching, limits and a playground.

    moesaic serve                                   # starter experts, 127.0.0.1:8080 (SageMaker contract)
    moesaic serve --model ./merged --api-key KEY    # any local VLM folder; Bearer key on all but /ping, /health
    moesaic serve --model ./merged --engine vllm    # `vllm serve` as a private child, behind these routes
    moesaic serve --upstream http://127.0.0.1:8000/v1 --model NAME   # front a running OpenAI-compatible engine

Routes: ``POST /v1/chat/completions`` (text + image_url parts: http(s) URL, data URL, bare base64;
``stream: true`` gives SSE ``chat.completion.chunk`` events, the last one carrying
``"moesaic": {"experts": [...]}``, then ``data: [DONE]``), ``GET /v1/models``, ``GET /ping``,
``POST /invocations`` (``{"question", "image"}``, a chat body, or raw ``image/*`` bytes with
``?question=``), ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /`` (playground page), ``/docs``.

Image URLs to loopback/private/metadata addresses are refused unless allowed with ``--allow-host``;
local file paths in requests are never read. Limits: ``--max-body-bytes``, ``--max-images``,
``--max-image-pixels``, ``--max-image-bytes``, ``--max-prompt-tokens`` (estimated as UTF-8 bytes / 4),
``--max-tokens-limit``, ``--queue-size`` (503 + Retry-After when full), ``--request-timeout-s`` (504).
"""

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
