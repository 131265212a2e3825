"""A backend that forwards to a running OpenAI-compatible engine (vLLM, SGLang, ``transformers serve``,
llama.cpp's server): what ``moesaic serve --upstream URL`` fronts.

Images reach the engine already decoded under moesaic's :class:`~moesaic.inputs.policy.ImagePolicy` and
shrunk to the model's input side, as lossless PNG data URLs: the engine never fetches a URL and never decodes
the client's original upload. Upstream failures become moesaic errors (OpenAI-shaped bodies with a status
that says whose fault it was): the engine's 4xx about the request stays a 4xx with its message, its 5xx a
502 without internals, an engine that cannot be reached a 503.

Both a blocking client (:meth:`UpstreamBackend.generate`, for the Python API) and an async one (the server's
gateway, :mod:`moesaic.serve.upstream`) are provided; they build bodies and read answers the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams, StreamChunk
from moesaic.config import FrozenModel
from moesaic.errors import ConfigError, InputError, MoesaicError, OverloadedError, RequestTimeoutError
from moesaic.inputs.messages import Turn

if TYPE_CHECKING:  # pragma: no cover
    import httpx
    from PIL import Image

    from moesaic.backends.upstream_http import AsyncPool, StreamResponse

__all__ = [
    "UpstreamConfig", "UpstreamBackend", "UpstreamError", "UpstreamUnavailableError", "folder_image_side",
    "openai_messages", "fit_within", "upstream_error",
]

log = logging.getLogger(__name__)
_SHOWN = 300  # characters of an upstream message passed on to the client


class UpstreamError(MoesaicError):
    """The engine behind the gateway failed or refused the gateway itself (not the client's request)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamUnavailableError(OverloadedError):
    """The engine cannot be reached (not started, crashed, wrong URL): 503 with ``Retry-After``."""

    code = "upstream_unavailable"


class UpstreamConfig(FrozenModel):
    url: str = Field(description="base URL of the engine's OpenAI API, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(min_length=1, description="the model name the engine serves")
    api_key: str | None = Field(None, description="Bearer key the engine expects", repr=False)
    image_side: int | None = Field(None, gt=0, description="longest side images are shrunk to (None: as decoded)")
    timeout_s: float = Field(120.0, gt=0, description="read timeout for one upstream answer")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(64, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the upstream URL must start with http:// or https://, got {value!r}")
        return url if url.endswith("/v1") else url + "/v1"

    @property
    def root(self) -> str:
        """The server root (``/health`` lives there), i.e. the URL without ``/v1``."""
        return self.url[: -len("/v1")]


def folder_image_side(model: str) -> int | None:
    """The largest side a local model folder's image processor resizes to (its ``size``,
    ``max_image_size`` and ``crop_size``: the keys :func:`moesaic.serve.service.model_image_side` reads from a
    loaded processor), read from ``processor_config.json`` or ``preprocessor_config.json``; ``None`` when
    ``model`` is not a folder or names no size."""
    folder = Path(model)
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        spec = data.get("image_processor", data) if isinstance(data, dict) else {}
        sides = [value for key in ("size", "max_image_size", "crop_size") if isinstance(spec.get(key), dict)
                 for name_ in ("longest_edge", "shortest_edge", "height", "width")
                 if isinstance(value := spec[key].get(name_), int) and value > 0]
        if sides:
            return max(sides)
    return None


def fit_within(image: "Image.Image", side: int | None) -> "Image.Image":
    """``image`` shrunk (aspect kept, never enlarged) so that its longest side is at most ``side``."""
    if side is None or max(image.size) <= side:
        return image
    from PIL import Image

    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def openai_messages(turns: list[Turn], side: int | None) -> list[dict[str, Any]]:
    """Decoded turns → OpenAI messages; each image becomes a PNG data URL of itself shrunk to ``side``."""
    from moesaic.inputs.encode import encode_image_base64

    out: list[dict[str, Any]] = []
    for turn in turns:
        if all(isinstance(p, str) for p in turn.parts):
            out.append({"role": turn.role, "content": "\n".join(turn.parts)})  # type: ignore[arg-type]
            continue
        parts = [{"type": "text", "text": p} if isinstance(p, str) else
                 {"type": "image_url", "image_url": {"url": encode_image_base64(fit_within(p, side))}}
                 for p in turn.parts]
        out.append({"role": turn.role, "content": parts})
    return out


def request_body(model: str, messages: list[dict[str, Any]], params: GenerationParams, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": params.max_new_tokens,
                            "temperature": 0.0 if params.greedy else params.temperature, "top_p": params.top_p}
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _finish(reason: object) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def parse_completion(data: Any, model: str) -> Answer:
    """An upstream ``chat.completion`` body → :class:`Answer` (a malformed body is a 502)."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("the engine's answer is not a chat completion",
                            "check that --upstream points at an OpenAI-compatible /v1 API") from None
    prompt, completion = _usage(data)
    return Answer(text=str(text), model=model, prompt_tokens=prompt, completion_tokens=completion,
                  finish_reason=_finish(choice.get("finish_reason")))


def _message_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:_SHOWN]
    if isinstance(data, dict):
        err = data.get("error", data)
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        return str(msg if msg is not None else data)[:_SHOWN]
    return str(data)[:_SHOWN]


def upstream_error(status: int, body: bytes, root: str) -> MoesaicError:
    """An upstream HTTP error as the moesaic error the client should see. Only the engine's complaints
    about the request itself (400, 413, 422) pass its message on; the engine's address never does."""
    message = _message_of(body)
    log.warning("upstream %s answered %d: %s", root, status, message)
    if status in (401, 403):
        return UpstreamError(f"the model engine refused the gateway's key ({status})",
                             "give the gateway the engine's key (--upstream-api-key or $MOESAIC_UPSTREAM_API_KEY)")
    if status == 404:
        return UpstreamError("the model engine answered 404 (model or route not found)",
                             "pass --model exactly as the engine serves it (GET /v1/models on the engine)")
    if status in (429, 503):
        return OverloadedError(f"the model engine is busy ({status})", "retry after a short pause")
    if status in (400, 413, 422):
        err = InputError(f"the model engine refused the request: {message}", "fix the request as the message says")
        err.status = 400 if status == 422 else status
        return err
    return UpstreamError(f"the model engine failed ({status})", "retry; if it keeps failing, read the engine's log")


def network_error(exc: Exception, root: str, timeout_s: float) -> MoesaicError:
    """A transport error (httpx's or :mod:`moesaic.backends.upstream_http`'s) as a moesaic error: 504 for a
    read timeout, 503 when the engine cannot be reached, else 502."""
    import httpx

    from moesaic.backends.upstream_http import ConnectFailed, ReadTimedOut

    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout | ReadTimedOut):
        return RequestTimeoutError(f"the model engine did not answer within {timeout_s:g} s",
                                   "ask for fewer max_tokens, or raise --request-timeout-s")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectFailed):
        log.warning("the engine at %s cannot be reached: %s", root, exc)
        return UpstreamUnavailableError("the model engine cannot be reached",
                                        "start the engine, or check --upstream (see GET /health)")
    log.warning("the connection to the engine at %s failed: %r", root, exc)
    return UpstreamError(f"the connection to the model engine failed ({type(exc).__name__})",
                         "retry; if it keeps failing, read the engine's log")


def stream_chunks(event: dict[str, Any], model: str, state: dict[str, Any]) -> Iterator[StreamChunk]:
    """One upstream ``chat.completion.chunk`` → text chunks; ``state`` keeps finish reason and usage."""
    if "error" in event:
        log.warning("upstream stream error: %s", event["error"])
        raise UpstreamError("the model engine failed while streaming", "retry; if it keeps failing, read its log")
    if event.get("usage"):
        state["prompt"], state["completion"] = _usage(event)
    for choice in event.get("choices") or ():
        if choice.get("finish_reason"):
            state["finish"] = _finish(choice["finish_reason"])
        text = (choice.get("delta") or {}).get("content")
        if text:
            state["text"].append(text)
            yield StreamChunk(text=text)


def final_chunk(model: str, state: dict[str, Any]) -> StreamChunk:
    return StreamChunk(answer=Answer(text="".join(state["text"]), model=model, prompt_tokens=state["prompt"],
                                     completion_tokens=state["completion"], finish_reason=state["finish"]))


def new_state() -> dict[str, Any]:
    return {"text": [], "prompt": 0, "completion": 0, "finish": "stop"}


def sse_data(line: str) -> dict[str, Any] | None:
    """The JSON of one ``data:`` line; ``None`` for other lines and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        event = json.loads(data)
    except ValueError:
        raise UpstreamError("the engine sent a stream event that is not JSON",
                            "check that --upstream points at an OpenAI-compatible /v1 API") from None
    return event if isinstance(event, dict) else None


class UpstreamBackend(Backend):
    """Answers by asking an OpenAI-compatible engine; holds one async and one blocking HTTP client."""

    name = "upstream"
    supports_images = True
    can_stream = True
    can_batch = False  # the engine batches; the gateway sends requests concurrently

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.model
        self.image_side = config.image_side
        self._async: AsyncPool | None = None
        self._sync: httpx.Client | None = None

    @classmethod
    def create(cls, model: str, options: BackendOptions) -> "UpstreamBackend":  # noqa: ARG003
        raise ConfigError("the upstream backend needs the engine's URL",
                          "use moesaic serve --upstream URL --model NAME, or UpstreamBackend(UpstreamConfig(...))")

    # --- clients -----------------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        import httpx

        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        n = self.config.max_connections
        return {"headers": headers, "trust_env": False,  # never route the engine through an env proxy
                "timeout": httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
                "limits": httpx.Limits(max_connections=n, max_keepalive_connections=n)}

    def pool(self) -> "AsyncPool":
        """The gateway's keep-alive connections to the engine (created in the running event loop)."""
        from moesaic.backends.upstream_http import AsyncPool

        if self._async is None:
            headers = {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
            self._async = AsyncPool(self.config.root, headers=headers, max_connections=self.config.max_connections,
                                    connect_timeout_s=self.config.connect_timeout_s,
                                    read_timeout_s=self.config.timeout_s)
        return self._async

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def body(self, prompt: list[Turn], params: GenerationParams, stream: bool) -> dict[str, Any]:
        """The upstream request body (images shrunk and PNG-encoded here: CPU work, run it off the loop)."""
        return request_body(self.config.model, openai_messages(prompt, self.image_side), params, stream)

    # --- async (the gateway) ---------------------------------------------------------------------
    async def acomplete(self, body: dict[str, Any]) -> Answer:
        try:
            response = await self.pool().request("POST", "/v1/chat/completions", json.dumps(body).encode())
        except (OSError, TimeoutError) as exc:
            raise network_error(exc, self.config.root, self.config.timeout_s) from None
        if response.status >= 400:
            raise upstream_error(response.status, response.content, self.config.root)
        try:
            data = json.loads(response.content)
        except ValueError:
            raise UpstreamError("the engine's answer is not JSON", "check --upstream") from None
        return parse_completion(data, self.config.model)

    async def astream(self, body: dict[str, Any]) -> "StreamResponse":
        """Send a streamed request and return the open response once its status is known (errors raise)."""
        try:
            response = await self.pool().stream("POST", "/v1/chat/completions", json.dumps(body).encode())
        except (OSError, TimeoutError) as exc:
            raise network_error(exc, self.config.root, self.config.timeout_s) from None
        if response.status >= 400:
            try:
                content = await response.aread()
            except (OSError, TimeoutError):
                content = b""
            finally:
                await response.aclose()
            raise upstream_error(response.status, content, self.config.root)
        return response

    async def achunks(self, response: "StreamResponse") -> AsyncIterator[StreamChunk]:
        """The text chunks of an open streamed response, then the final :class:`Answer` chunk."""
        state = new_state()
        try:
            async for line in response.lines():
                event = sse_data(line)
                if event is not None:
                    for chunk in stream_chunks(event, self.config.model, state):
                        yield chunk
        except (OSError, TimeoutError) as exc:
            raise network_error(exc, self.config.root, self.config.timeout_s) from None
        yield final_chunk(self.config.model, state)

    async def ahealth(self, timeout_s: float) -> str | None:
        """``None`` when the engine's ``/health`` (or, without one, ``/v1/models``) answers 200, else why not."""
        pool = self.pool()
        try:
            for path in ("/health", "/v1/models"):
                response = await asyncio.wait_for(pool.request("GET", path), timeout_s)
                if response.status != 404:
                    break
        except (OSError, TimeoutError) as exc:
            return f"cannot reach the engine ({type(exc).__name__})"
        return None if response.status == 200 else f"the engine answered {response.status}"

    # --- blocking (the Python API) -----------------------------------------------------------------
    def _client(self) -> "httpx.Client":
        import httpx

        if self._sync is None:
            self._sync = httpx.Client(**self._client_kwargs())
        return self._sync

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        import httpx

        body = self.body(prompt, params or GenerationParams(), stream=False)
        try:
            response = self._client().post(f"{self.config.url}/chat/completions", json=body)
        except httpx.TransportError as exc:
            raise network_error(exc, self.config.root, self.config.timeout_s) from None
        if response.status_code >= 400:
            raise upstream_error(response.status_code, response.content, self.config.root)
        return parse_completion(response.json(), self.config.model)

    def stream(self, prompt: list[Turn], params: GenerationParams | None = None) -> Iterator[StreamChunk]:
        import httpx

        body = self.body(prompt, params or GenerationParams(), stream=True)
        state = new_state()
        try:
            with self._client().stream("POST", f"{self.config.url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise upstream_error(response.status_code, response.read(), self.config.root)
                for line in response.iter_lines():
                    event = sse_data(line)
                    if event is not None:
                        yield from stream_chunks(event, self.config.model, state)
        except httpx.TransportError as exc:
            raise network_error(exc, self.config.root, self.config.timeout_s) from None
        yield final_chunk(self.config.model, state)
