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


@pytest.fixture()
def slow_image_server():
    """Answers every GET with a red PNG after 0.4 s, on 127.0.0.1 (port 0)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = base64.b64decode(RED_B64)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(0.4)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_images_are_fetched_concurrently(slow_image_server: str) -> None:
    import time

    policy = ImagePolicy(allow_private_hosts=["127.0.0.1"])
    refs = [f"{slow_image_server}/{i}.png" for i in range(3)]
    start = time.monotonic()
    turn = resolve_messages(question_messages("q", refs), policy, workers=4)[0]
    elapsed = time.monotonic() - start
    assert [im.getpixel((0, 0)) for im in turn.images] == [(255, 0, 0)] * 3
    assert elapsed < 1.1  # one after another would take at least 1.2 s


def test_first_failing_image_in_order_is_reported() -> None:
    refs = [RED_B64, "data:text/plain;base64,aGk=", "file:///etc/passwd"]
    with pytest.raises(ImageError, match="text/plain"):
        resolve_messages(question_messages("q", refs))
    with pytest.raises(URLPolicyError):
        resolve_messages(question_messages("q", [RED_B64, *refs[::-1]]))
