"""Chat messages: OpenAI's content parts (text, image_url) and the plain ``question`` + ``image(s)`` form.

Requests carry image *references* (URL, data URL, bare base64, path). :func:`resolve_messages` turns
them into :class:`Turn` objects whose image parts are decoded PIL images; backends only ever see turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moesaic.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from PIL import Image

    from moesaic.inputs.images import ImagePolicy

__all__ = [
    "TextPart",
    "ImageURL",
    "ImageURLPart",
    "ContentPart",
    "ChatMessage",
    "QuestionRequest",
    "Turn",
    "resolve_messages",
    "image_refs",
    "question_messages",
]


def _encodable(text: str) -> str:
    # JSON may escape a lone UTF-16 surrogate ("\ud800"); Python keeps it, and UTF-8 encoding (token
    # counting, tokenizers) would fail later as a server error. Refuse it here, as the client's mistake.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the text holds an unpaired UTF-16 surrogate at character {exc.start}; "
                         "send valid Unicode") from None
    return text


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Part):
    type: Literal["text"] = "text"
    text: str


class ImageURL(_Part):
    url: str = Field(min_length=1, description="http(s) URL, data: URL or bare base64")
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(_Part):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _accept_bare_string(cls, value: object) -> object:
        # Several clients send {"image_url": "https://..."}; accept it as {"url": ...}.
        return {"url": value} if isinstance(value, str) else value


ContentPart = Annotated[Union[TextPart, ImageURLPart], Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    @field_validator("content")
    @classmethod
    def _valid_unicode(cls, content: str | list[TextPart | ImageURLPart]) -> str | list[TextPart | ImageURLPart]:
        for part in [content] if isinstance(content, str) else content:
            _encodable(part if isinstance(part, str) else getattr(part, "text", ""))
        return content

    def parts(self) -> list[TextPart | ImageURLPart]:
        return [TextPart(text=self.content)] if isinstance(self.content, str) else list(self.content)

    def text(self) -> str:
        return "\n".join(p.text for p in self.parts() if isinstance(p, TextPart))


class QuestionRequest(BaseModel):
    """The plain form: ``{"question": "...", "image": "<URL or base64>"}`` (or ``images``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=1)
    image: str | None = None
    images: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_both(self) -> "QuestionRequest":
        if self.image is not None and self.images:
            raise ValueError("give either 'image' or 'images', not both")
        return self

    def all_images(self) -> list[str]:
        return [self.image] if self.image is not None else list(self.images)

    def to_messages(self) -> list[ChatMessage]:
        return question_messages(self.question, self.all_images())


def question_messages(question: str, images: list[str] | tuple[str, ...] = ()) -> list[ChatMessage]:
    """One user message: the images first, then the question (the order VLM chat templates expect)."""
    parts: list[TextPart | ImageURLPart] = [ImageURLPart(image_url=ImageURL(url=ref)) for ref in images]
    parts.append(TextPart(text=question))
    return [ChatMessage(role="user", content=parts)]


def image_refs(messages: list[ChatMessage]) -> list[str]:
    return [p.image_url.url for m in messages for p in m.parts() if isinstance(p, ImageURLPart)]


@dataclass(frozen=True)
class Turn:
    """A message with its images decoded: ``parts`` interleaves ``str`` and ``PIL.Image.Image``."""

    role: Literal["system", "user", "assistant"]
    parts: tuple["str | Image.Image", ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return "\n".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list["Image.Image"]:
        return [p for p in self.parts if not isinstance(p, str)]


def resolve_messages(
    messages: list[ChatMessage],
    policy: "ImagePolicy | None" = None,
    *,
    max_images: int | None = None,
    workers: int = 4,
    load: "Callable[[str], Image.Image] | None" = None,
) -> list[Turn]:
    """Decode every image reference with :func:`moesaic.inputs.images.load_image` under ``policy`` (or with
    ``load``, which the server uses to decode bytes it fetched itself and to count pixels against its budget).

    Up to ``workers`` images are fetched/decoded at once (a request with four URLs waits for the slowest,
    not for the sum); the first failing image, in message order, is the error raised, after the other
    images of the request finished (no thread outlives the call).
    """
    from moesaic.inputs.images import ImagePolicy, load_image

    policy = policy or ImagePolicy()
    loader = load or (lambda ref: load_image(ref, policy))
    if not messages:
        raise InputError("no messages given", "send at least one user message")
    refs = image_refs(messages)
    if max_images is not None and len(refs) > max_images:
        raise InputError(
            f"{len(refs)} images given but at most {max_images} are accepted",
            f"send {max_images} image(s) or fewer per request",
        )
    images = iter(_load_all(refs, loader, workers))
    turns = []
    for msg in messages:
        parts: list[str | Image.Image] = []
        for part in msg.parts():
            parts.append(part.text if isinstance(part, TextPart) else next(images))
        turns.append(Turn(role=msg.role, parts=tuple(parts)))
    return turns


def _load_all(refs: list[str], load: "Callable[[str], Image.Image]", workers: int) -> list["Image.Image"]:
    from concurrent.futures import ThreadPoolExecutor

    if len(refs) <= 1 or workers <= 1:
        return [load(ref) for ref in refs]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(refs)), thread_name_prefix="moesaic-images")
    try:
        futures = [pool.submit(load, ref) for ref in refs]
        return [future.result() for future in futures]
    finally:  # images not started are dropped; running ones finish (fetches are bounded by their deadline)
        pool.shutdown(wait=True, cancel_futures=True)
