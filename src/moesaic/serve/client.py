"""Client for a moesaic (or any OpenAI-compatible) endpoint: what ``moesaic ask --endpoint`` calls.

The image is read or fetched *here* and sent as a data URL, so the server never needs to reach the
client's files or network. Library code never prints: streamed deltas go to the ``on_delta`` callback.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from moesaic.errors import ImageError, MoesaicError

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.ask import AskConfig, AskResult
    from moesaic.inputs.policy import ImagePolicy

__all__ = ["ask_endpoint", "EndpointError", "image_data_url", "base_url"]


_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]+")


class EndpointError(MoesaicError):
    status = 502
    type = "server_error"
    code = "endpoint_error"


def base_url(endpoint: str) -> str:
    """``http://host:port``, ``.../`` and ``.../v1`` all mean the same server."""
    url = endpoint.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def image_data_url(ref: str, policy: "ImagePolicy | None" = None) -> str:
    """A data URL for a local file or an http(s) URL (fetched here, under ``policy``); data URLs and bare
    base64 pass through."""
    if ref.startswith("data:"):
        return ref
    if ref.startswith(("http://", "https://")):
        from moesaic.inputs.fetch import fetch_image_bytes
        from moesaic.inputs.policy import ImagePolicy

        data = fetch_image_bytes(ref, policy or ImagePolicy.for_cli())  # the bytes as served, not re-encoded
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            if len(ref) > 64 and _BASE64.fullmatch(ref):
                return ref  # bare base64: the server decodes it
            raise ImageError(f"image file {ref} does not exist", "pass an existing image path or an http(s) URL")
        data = path.read_bytes()
    return f"data:{_mime(data, ref)};base64," + base64.b64encode(data).decode("ascii")


def _mime(data: bytes, name: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "png").lower()
    except (UnidentifiedImageError, OSError):
        raise ImageError(f"{name} is not an image PIL can read", "pass a JPEG, PNG, WebP or GIF file") from None
    return f"image/{'jpeg' if fmt == 'jpg' else fmt}"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        message, code = str(err["message"]), err.get("code")
    except Exception:  # noqa: BLE001 - not our error shape
        message, code = response.text[:300] or response.reason_phrase, None
    exc = EndpointError(f"the endpoint answered {response.status_code}: {message}",
                        "check the endpoint URL, --api-key and the request")
    exc.status, exc.code = response.status_code, code or exc.code
    raise exc


def _served_model(client: httpx.Client, root: str, wanted: str) -> str:
    """``wanted`` when the server lists it, else the server's first model."""
    response = client.get(f"{root}/v1/models")
    _raise_for(response)
    ids = [m["id"] for m in response.json().get("data", [])]
    return wanted if wanted in ids or not ids else ids[0]


def _chat_body(config: "AskConfig", model: str, image: str | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image}}] if image else []
    parts.append({"type": "text", "text": config.question})
    return {"model": model, "messages": [{"role": "user", "content": parts}], "stream": bool(config.stream),
            **_generation(config)}


def _generation(config: "AskConfig") -> dict[str, Any]:
    keys = ("max_tokens", "temperature", "top_p", "seed")
    return {k: v for k in keys if (v := getattr(config, k, None)) is not None}


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise EndpointError(f"the endpoint failed while streaming: {event['error'].get('message')}",
                                "retry, or ask without --stream")
        yield event


class _Reply(NamedTuple):
    text: str
    model: str
    experts: list[str]
    finish_reason: str | None


def _stream_chat(client: httpx.Client, url: str, body: dict[str, Any],
                 on_delta: Callable[[str], None] | None) -> _Reply:
    text, experts, finish = [], [], None
    with client.stream("POST", url, json=body) as response:
        if response.status_code >= 400:
            response.read()
            _raise_for(response)
        for event in _events(response):
            for choice in event.get("choices", []):
                delta = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if delta:
                    text.append(delta)
                    if on_delta is not None:
                        on_delta(delta)
            experts = (event.get("moesaic") or {}).get("experts", experts)
    return _Reply("".join(text), body["model"], list(experts), finish)


def _ask_chat(client: httpx.Client, root: str, config: "AskConfig", image: str | None,
              on_delta: Callable[[str], None] | None) -> _Reply:
    body = _chat_body(config, _served_model(client, root, config.model), image)
    url = f"{root}/v1/chat/completions"
    if config.stream:
        return _stream_chat(client, url, body, on_delta)
    response = client.post(url, json=body)
    _raise_for(response)
    data = response.json()
    choice = data["choices"][0]
    experts = list((data.get("moesaic") or {}).get("experts", []))
    return _Reply(choice["message"]["content"], data.get("model", body["model"]), experts, choice.get("finish_reason"))


def _ask_invocations(client: httpx.Client, root: str, config: "AskConfig", image: str | None) -> _Reply:
    body = {"question": config.question, **({"image": image} if image else {}), **_generation(config)}
    response = client.post(f"{root}/invocations", json=body)
    _raise_for(response)
    data = response.json()
    return _Reply(data["answer"], data.get("model", config.model), list(data.get("experts", [])),
                  data.get("finish_reason"))


def ask_endpoint(
    config: "AskConfig", on_delta: Callable[[str], None] | None = None, *, policy: "ImagePolicy | None" = None
) -> "AskResult":
    """Ask ``config.endpoint`` about ``config.image`` (chat completions, or SageMaker ``/invocations``).

    ``on_delta`` receives each streamed text piece when ``config.stream`` is set; ``policy`` governs the
    local fetch of an image URL (default: the CLI's, public hosts only).
    """
    from moesaic.ask import AskResult

    if not config.endpoint:
        raise MoesaicError("no endpoint given", "pass --endpoint http://host:port")
    root = base_url(config.endpoint)
    image = image_data_url(config.image, policy) if config.image else None
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    started = time.perf_counter()
    try:
        with httpx.Client(headers=headers, timeout=httpx.Timeout(300.0, connect=10.0)) as client:
            if config.route == "invocations":
                reply = _ask_invocations(client, root, config, image)
            else:
                reply = _ask_chat(client, root, config, image, on_delta)
    except httpx.HTTPError as exc:
        raise EndpointError(f"could not reach {root}: {exc}", "check that the server runs and the URL") from None
    return AskResult(answer=reply.text, model=reply.model, experts=reply.experts, question=config.question,
                     finish_reason=reply.finish_reason, latency_s=time.perf_counter() - started)
