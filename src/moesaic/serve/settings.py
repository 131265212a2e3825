"""``moesaic serve`` settings: one frozen config that is both the CLI's flags and the server's limits.

Every limit has a safe default; the server never reads local files named in requests and never fetches
loopback/private/metadata addresses unless a host is allow-listed with ``--allow-host``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from moesaic.config import CommandConfig

__all__ = ["ServeConfig", "ServeSettings", "sagemaker_host", "SAGEMAKER_ROOT"]

MiB = 1024 * 1024


class ServeConfig(CommandConfig):
    """Serve a model over an OpenAI-compatible and SageMaker-compatible HTTP API."""

    model: str = Field("starter", description="'starter', a local model folder or a hub id")
    backend: str | None = Field(None, description="backend name (default: chosen from the model)")
    engine: Literal["moesaic", "vllm"] = Field("moesaic", description="moesaic's server or vLLM's")
    served_model_name: str | None = Field(None, description="name reported by /v1/models (default: --model)")
    host: str = Field("127.0.0.1", description="interface to bind (0.0.0.0 inside containers)")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (SageMaker expects 8080)")
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' (or $MOESAIC_API_KEY)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    routing: Literal["token", "sequence", "sequence_first"] = Field(
        "token", description="merged MoEs: route per token, or one expert choice per request")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="transformers models: load the linear layers in 4 or 8 bits (bitsandbytes)")
    allow_host: list[str] = Field(
        default_factory=list, description="hosts or CIDRs image URLs may reach even if private/loopback"
    )
    max_body_bytes: int = Field(20 * MiB, ge=1024, description="largest request body")
    max_images: int = Field(4, ge=0, description="images per request")
    max_image_bytes: int = Field(10 * MiB, ge=1, description="largest encoded image")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest image (width × height)")
    max_image_side: int = Field(8192, ge=16, description="longest image side after decoding (longer: downscaled)")
    max_image_aspect: float = Field(20.0, ge=1.0, description="long/short side after decoding (thinner: padded)")
    max_messages: int = Field(256, ge=1, description="messages per request, empty ones included")
    max_content_parts: int = Field(512, ge=1, description="content parts per request, all messages together")
    max_pixels_in_flight: int | None = Field(
        None, ge=1, description="decoded image pixels held by all requests at once (default: from --max-rss-mib)")
    max_rss_mib: int | None = Field(
        None, ge=64, description="resident memory above which new requests get 503 (default: 3/4 of the machine's)")
    budget_wait_s: float = Field(5.0, ge=0, description="how long an image waits for pixel budget before 503")
    fetch_workers: int = Field(16, ge=1, description="threads fetching image URLs, all clients together")
    fetch_per_client: int = Field(4, ge=1, description="image URLs fetched at once for one client address")
    decode_workers: int = Field(8, ge=1, description="requests decoding their images at once")
    max_prompt_tokens: int = Field(
        4096, ge=1, description="prompt text limit, approximated as ceil(UTF-8 bytes / 4) per request"
    )
    max_tokens_limit: int = Field(2048, ge=1, le=8192, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none (capped by max_tokens_limit)")
    max_batch_size: int = Field(8, ge=1, description="requests per batched generate call")
    batch_wait_ms: float = Field(10.0, ge=0, description="how long the first request waits for company")
    queue_size: int = Field(64, ge=1, description="waiting requests before 503")
    request_timeout_s: float = Field(120.0, gt=0, description="per-request deadline (504 after it)")
    header_timeout_s: float = Field(10.0, gt=0, description="time a connection has to send its request headers")
    body_timeout_s: float = Field(30.0, gt=0, description="time a request has to send its whole body (408 after)")
    image_timeout_s: float = Field(10.0, gt=0, description="image URL fetch timeout")
    vllm_args: list[str] = Field(default_factory=list, description="extra arguments for `vllm serve`")
    upstream: str | None = Field(
        None, description="front a running OpenAI-compatible engine at this URL (http://127.0.0.1:8000/v1); "
        "--model is then the name the engine serves")
    upstream_api_key: str | None = Field(None, description="the engine's key (or $MOESAIC_UPSTREAM_API_KEY)")
    image_side: int | None = Field(
        None, gt=0, description="gateway: longest side images are shrunk to before they go upstream "
        "(default: read from --model when it is a local folder)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("allow_host", mode="before")
    @classmethod
    def _hosts_from_flag(cls, value: object) -> object:
        # `--allow-host 127.0.0.1` or `--allow-host 127.0.0.1,10.0.0.0/8` from the command line.
        return [h.strip() for h in value.split(",") if h.strip()] if isinstance(value, str) else value

    @field_validator("vllm_args", mode="before")
    @classmethod
    def _args_from_flag(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @property
    def effective_default_max_tokens(self) -> int:
        return min(self.default_max_tokens, self.max_tokens_limit)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("MOESAIC_API_KEY") or None

    def resolved_upstream_api_key(self) -> str | None:
        return self.upstream_api_key or os.environ.get("MOESAIC_UPSTREAM_API_KEY") or None


ServeSettings = ServeConfig


SAGEMAKER_ROOT = Path("/opt/ml")  # SageMaker mounts model artefacts under /opt/ml/model


def sagemaker_host(config: ServeConfig) -> str:
    """Inside a SageMaker container (``/opt/ml`` exists or ``SM_*``/``SAGEMAKER_*`` variables are set) bind
    every interface, as the contract needs; an explicit ``--host`` always wins."""
    in_sagemaker = SAGEMAKER_ROOT.is_dir() or any(k.startswith(("SM_", "SAGEMAKER_")) for k in os.environ)
    if in_sagemaker and "host" not in config.model_fields_set:
        return "0.0.0.0"
    return config.host
