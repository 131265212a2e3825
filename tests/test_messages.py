"""Chat messages: OpenAI content parts, the plain question + image form, and decoding them into turns."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from pydantic import ValidationError

from moesaic.errors import ImageError, InputError, URLPolicyError
from moesaic.inputs import (
    ChatMessage,
    ImagePolicy,
    ImageURLPart,
    QuestionRequest,
    TextPart,
    encode_image_base64,
    image_refs,
    question_messages,
    resolve_messages,
)


def _png_b64(color: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


RED_B64 = _png_b64((255, 0, 0))
BLUE_URL = encode_image_base64(Image.new("RGB", (6, 6), (0, 0, 255)))


def openai_messages() -> list[dict]:
    return [
        {"role": "system", "content": "You describe products."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these two:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{RED_B64}", "detail": "low"}},
                {"type": "image_url", "image_url": BLUE_URL},  # bare string, as several clients send
            ],
        },
    ]


def test_openai_content_parts_parse() -> None:
    messages = [ChatMessage.model_validate(m) for m in openai_messages()]
    assert messages[0].parts() == [TextPart(text="You describe products.")]
    parts = messages[1].parts()
    assert [type(p) for p in parts] == [TextPart, ImageURLPart, ImageURLPart]
    assert parts[1].image_url.detail == "low"
    assert parts[2].image_url.url == BLUE_URL and parts[2].image_url.detail is None
    assert messages[1].text() == "Compare these two:"
    assert image_refs(messages) == [f"data:image/png;base64,{RED_B64}", BLUE_URL]


@pytest.mark.parametrize("bad", [
    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "ultra"}}]},
    {"role": "tool", "content": "hi"},
    {"role": "user", "content": "hi", "extra": 1},
])
def test_malformed_messages_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ChatMessage.model_validate(bad)


def test_resolve_messages_decodes_images_in_order() -> None:
    messages = [ChatMessage.model_validate(m) for m in openai_messages()]
    turns = resolve_messages(messages)
    assert [t.role for t in turns] == ["system", "user"]
    assert turns[0].images == [] and turns[0].text == "You describe products."
    user = turns[1]
    assert user.parts[0] == "Compare these two:"
    assert [im.size for im in user.images] == [(12, 8), (6, 6)]
    assert [im.mode for im in user.images] == ["RGB", "RGB"]
    assert user.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert user.images[1].getpixel((5, 5)) == (0, 0, 255)


def test_max_images_is_enforced_before_any_decoding() -> None:
    messages = question_messages("which?", ["junk-1", "junk-2", "junk-3"])
    with pytest.raises(InputError, match="3 images given but at most 2") as info:
        resolve_messages(messages, max_images=2)
    assert not isinstance(info.value, ImageError)  # the count failed first, not the junk references
    assert "2 image(s) or fewer" in (info.value.hint or "")
    assert len(resolve_messages(question_messages("q", [RED_B64, RED_B64]), max_images=2)[0].images) == 2


def test_resolve_messages_applies_the_policy() -> None:
    messages = question_messages("what is this?", ["photo.jpg"])
    with pytest.raises(URLPolicyError, match="local file paths are not allowed"):
        resolve_messages(messages)
    with pytest.raises(ImageError, match="over the limit of 50"):
        resolve_messages(question_messages("q", [RED_B64]), ImagePolicy(max_pixels=50))
    with pytest.raises(InputError, match="no messages"):
        resolve_messages([])


def test_question_request_forms() -> None:
    single = QuestionRequest.model_validate({"question": "What colour?", "image": RED_B64})
    many = QuestionRequest.model_validate({"question": "What colour?", "images": [RED_B64, BLUE_URL]})
    assert single.all_images() == [RED_B64] and many.all_images() == [RED_B64, BLUE_URL]
    msgs = many.to_messages()
    assert len(msgs) == 1 and msgs[0].role == "user"
    assert [type(p) for p in msgs[0].parts()] == [ImageURLPart, ImageURLPart, TextPart]  # images first
    turn = resolve_messages(msgs)[0]
    assert turn.text == "What colour?" and [im.getpixel((0, 0)) for im in turn.images] == [(255, 0, 0), (0, 0, 255)]
    assert QuestionRequest(question="no image").to_messages()[0].parts() == [TextPart(text="no image")]
    with pytest.raises(ValidationError, match="either 'image' or 'images'"):
        QuestionRequest.model_validate({"question": "q", "image": RED_B64, "images": [RED_B64]})
    with pytest.raises(ValidationError):
        QuestionRequest.model_validate({"question": "", "image": RED_B64})
