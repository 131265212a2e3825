"""How eval asks a model: a local backend (decoded images) or an OpenAI-compatible endpoint (data URLs).

Both are :class:`Answerer` objects: ``answer(sample, params) -> Answer``. Endpoint models are called
through the official ``openai`` SDK at ``/v1/chat/completions`` with each image sent as a data URL.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams
from moesaic.errors import AuthError, FetchError, MoesaicError, missing_extra
from moesaic.eval.config import EvalModel, openai_base_url
from moesaic.eval.data import Sample, is_local_path_ref
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from pydantic import SecretStr

__all__ = ["Answerer", "BackendAnswerer", "EndpointAnswerer", "make_answerer", "image_data_url", "openai_client"]


def openai_client(endpoint: str, api_key: "SecretStr | None", timeout_s: float) -> tuple[Any, Any]:
    """(the ``openai`` module, a client for ``endpoint``); the key defaults to ``$OPENAI_API_KEY``."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is in the eval extra
        raise missing_extra("openai", "eval") from None
    secret = api_key.get_secret_value() if api_key is not None else None
    key = secret or os.environ.get("OPENAI_API_KEY") or "none"
    return openai, openai.OpenAI(base_url=openai_base_url(endpoint), api_key=key, timeout=timeout_s, max_retries=1)


def image_data_url(ref: str) -> str:
    """An image reference as something an OpenAI-compatible API accepts: URLs pass, files and bare base64
    become data URLs (their bytes sent as they are, MIME type read from the header)."""
    from moesaic.inputs.encode import encode_image_base64
    from moesaic.inputs.images import decode_base64

    if ref.startswith(("http://", "https://", "data:")):
        return ref
    if is_local_path_ref(ref):
        return encode_image_base64(Path(ref))
    return encode_image_base64(decode_base64(ref))


def load_sample_image(ref: str) -> "Image.Image":
    """Decode a dataset image: local files with the photo-format allowlist, other references (URLs, data
    URLs, base64) through :func:`moesaic.inputs.images.load_image` with the CLI's policy."""
    from moesaic.tasks.base import open_image

    return open_image(ref)


class Answerer(ABC):
    """Answers eval samples; ``calls`` counts real model calls (cache hits do not call)."""

    kind: str = "local"

    def __init__(self) -> None:
        self.calls = 0

    @abstractmethod
    def answer(self, sample: Sample, params: GenerationParams) -> Answer: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class BackendAnswerer(Answerer):
    """A loaded :class:`~moesaic.backends.base.Backend`: the image first, then the question."""

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    def answer(self, sample: Sample, params: GenerationParams) -> Answer:
        image = load_sample_image(sample.image)
        turn = Turn(role="user", parts=(image, sample.question))
        self.calls += 1
        return self.backend.generate([turn], params)

    def close(self) -> None:
        self.backend.close()


class EndpointAnswerer(Answerer):
    """An OpenAI-compatible chat-completions endpoint, called with the ``openai`` SDK."""

    kind = "endpoint"

    def __init__(self, spec: EvalModel) -> None:
        super().__init__()
        self._openai, self.client = openai_client(str(spec.endpoint), spec.api_key, spec.timeout_s)
        self.endpoint = str(spec.endpoint)
        self.model = spec.served_model or self._served_model(spec.name)

    def _served_model(self, wanted: str) -> str:
        """As ``moesaic ask --endpoint`` does: ``wanted`` when the server lists it (or lists nothing, or
        cannot list), else the one model it serves first."""
        try:
            ids = [m.id for m in self.client.models.list()]
        except self._openai.OpenAIError:
            return wanted
        return wanted if wanted in ids or not ids else ids[0]

    def _request(self, sample: Sample, params: GenerationParams) -> dict[str, Any]:
        content = [{"type": "image_url", "image_url": {"url": image_data_url(sample.image)}},
                   {"type": "text", "text": sample.question}]
        request: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}],
                                   "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                                   "top_p": params.top_p}
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = list(params.stop)
        return request

    def answer(self, sample: Sample, params: GenerationParams) -> Answer:
        request = self._request(sample, params)
        self.calls += 1
        try:
            response = self.client.chat.completions.create(**request)
        except self._openai.AuthenticationError:
            raise AuthError(f"{self.endpoint} rejected the API key", "set models[].api_key or $OPENAI_API_KEY") \
                from None
        except self._openai.APIStatusError as exc:
            raise FetchError(f"{self.endpoint} answered HTTP {exc.status_code}: {exc.message}",
                             "check the endpoint URL, the model name and the server's log") from None
        except self._openai.APIConnectionError as exc:
            raise FetchError(f"cannot reach {self.endpoint}: {exc}", "is the server running at that base URL?") \
                from None
        choice = response.choices[0]
        usage = response.usage
        return Answer(
            text=choice.message.content or "",
            model=response.model or self.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )

    def close(self) -> None:
        self.client.close()


def make_answerer(spec: EvalModel) -> Answerer:
    """Load the model named by ``spec`` (or connect to its endpoint). Local models go through the one
    backend registry that ``moesaic ask`` and ``moesaic serve`` use, so every ``--model`` they take works."""
    if spec.is_endpoint:
        return EndpointAnswerer(spec)
    from moesaic.backends.registry import load_backend

    options = BackendOptions(dtype=spec.dtype, device=spec.device, routing=spec.routing,
                             quantization=spec.quantization)
    try:
        backend = load_backend(str(spec.model), options, backend=spec.backend)
    except MoesaicError:
        raise
    except ModuleNotFoundError as exc:
        raise MoesaicError(f"model {spec.name!r}: its backend needs {exc.name}, which is not available",
                           "install the missing package or choose another backend") from None
    return BackendAnswerer(backend)
