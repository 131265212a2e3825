"""Wire models of the HTTP API: OpenAI chat completions, SageMaker invocations and error bodies."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moesaic.errors import InputError, MoesaicError
from moesaic.inputs.messages import ChatMessage

__all__ = [
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ResponseMessage",
    "Usage",
    "MoesaicExtra",
    "ModelCard",
    "ModelList",
    "InvocationResponse",
    "ErrorBody",
    "ErrorResponse",
    "PayloadTooLargeError",
    "BodyTimeoutError",
    "InternalError",
    "CrossOriginError",
    "completion_id",
    "error_payload",
    "shown",
    "InvocationQuestion",
    "request_schemas",
    "body_ref",
]


class PayloadTooLargeError(InputError):
    status = 413
    code = "payload_too_large"


class BodyTimeoutError(InputError):
    """The client did not send its whole body in time (slow upload or a stalled connection)."""

    status = 408
    code = "request_timeout"


class CrossOriginError(MoesaicError):
    """A page from another web origin sent a request through a visitor's browser (cross-site request)."""

    status = 403
    type = "permission_error"
    code = "cross_origin"


class InternalError(MoesaicError):
    """A backend failed; the message never carries its internals."""

    status = 500
    type = "server_error"
    code = "internal_error"


MAX_SHOWN = 200  # characters of client input an error message may quote
MAX_MESSAGE = 2000  # characters of any error message or param


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """Client input as quoted in an error: at most ``limit`` characters (a 10 MB model name stays 10 MB in
    the client's request, not in our answer)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_payload(exc: MoesaicError) -> dict[str, Any]:
    """``exc.to_dict()`` with message and param bounded, whatever the error quoted."""
    body = exc.to_dict()
    inner = body.get("error", body)
    for key in ("message", "param"):
        if isinstance(inner.get(key), str):
            inner[key] = shown(inner[key], MAX_MESSAGE)
    return body


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that moesaic honours; unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stop_encodable(cls, value: list[str] | None) -> list[str] | None:
        for text in value or ():  # a JSON-escaped lone surrogate ("\ud800") fails in the tokenizer: a 500
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a stop string holds an unpaired UTF-16 surrogate; send valid Unicode") from None
        return value

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _null_default(cls, value: object, info: Any) -> object:
        if value is None:
            return 0.0 if info.field_name == "temperature" else 1.0
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class MoesaicExtra(BaseModel):
    """moesaic's addition to OpenAI responses: which experts answered."""

    experts: list[str] = Field(default_factory=list)


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    moesaic: MoesaicExtra = Field(default_factory=MoesaicExtra)


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    moesaic: MoesaicExtra | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "moesaic"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class InvocationResponse(BaseModel):
    """SageMaker ``/invocations`` answer."""

    answer: str
    model: str
    experts: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: Literal["stop", "length"] = "stop"


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody



class InvocationQuestion(BaseModel):
    """Documentation of ``/invocations``' plain form (parsed with :class:`moesaic.inputs.QuestionRequest`)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    image: str | None = Field(None, description="http(s) URL, data URL or bare base64")
    images: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None


def request_schemas() -> dict[str, Any]:
    """OpenAPI component schemas of the request bodies (routes parse bodies themselves)."""
    out: dict[str, Any] = {}
    for model in (ChatCompletionRequest, InvocationQuestion):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def body_ref(*names: str) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is one of the named component schemas."""
    refs = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
