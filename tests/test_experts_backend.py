"""StarterBackend: router → experts → writer, through the backend protocol and the registry."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from moesaic.backends.base import GenerationParams
from moesaic.errors import InputError
from moesaic.experts.backend import StarterBackend
from moesaic.inputs.messages import Turn

skdata = pytest.importorskip("skimage.data")


def sign() -> Image.Image:
    import matplotlib
    from pathlib import Path

    font = ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), 30)
    img = Image.new("RGB", (360, 80), "white")
    ImageDraw.Draw(img).text((12, 20), "FRESH BREAD", fill="black", font=font)
    return img


@pytest.fixture(scope="module")
def backend() -> StarterBackend:
    from moesaic.backends.registry import load_backend

    made = load_backend("starter")
    assert isinstance(made, StarterBackend) and made.writer == "template"
    return made


def ask(backend: StarterBackend, question: str, *images: Image.Image, **params: object):  # type: ignore[no-untyped-def]
    return backend.generate([Turn(role="user", parts=(*images, question))], GenerationParams(**params))


def test_generic_question_on_coffee(backend: StarterBackend) -> None:
    answer = ask(backend, "What is in this image?", Image.fromarray(skdata.coffee()))
    assert answer.text.startswith("This looks like an espresso (9")
    assert "Dominant colours: brown" in answer.text and "Text:" not in answer.text
    assert answer.experts == ["tagger", "ocr", "colors"] and answer.model == "starter"
    found = answer.details["images"][0]
    assert found["tags"][0]["label"] == "espresso" and found["text"] == [] and found["colors"][0]["name"] == "brown"
    assert answer.details["route"]["reason"] == "generic" and answer.details["writer"] == "template"


def test_text_question_reads_the_sign(backend: StarterBackend) -> None:
    answer = ask(backend, "What does the sign say?", sign())
    assert answer.text == 'The text reads: "FRESH BREAD".'
    assert answer.experts == ["ocr"] and answer.details["images"][0]["text"][0]["score"] > 0.9


def test_generic_question_mentions_found_text(backend: StarterBackend) -> None:
    answer = ask(backend, "", sign())
    assert 'Text: "FRESH BREAD".' in answer.text and "white" in answer.text


def test_yes_no_and_colour_questions(backend: StarterBackend) -> None:
    cat = Image.fromarray(skdata.chelsea())
    assert ask(backend, "Is there a cat?", cat).text.startswith("Yes: it looks like a")
    colour = ask(backend, "What colour is it?", Image.new("RGB", (48, 48), "red"))
    assert colour.text == "The main colour is red (100%)." and colour.experts == ["colors"]


def test_colours_of_a_subject_on_a_plain_backdrop_leave_the_backdrop_out(backend: StarterBackend) -> None:
    from PIL import ImageDraw

    from moesaic.experts.factcheck import check_answer
    from moesaic.experts.findings import ImageFindings

    shot = Image.new("RGB", (64, 64), "white")  # a product shot: a red shirt-sized block on white
    ImageDraw.Draw(shot).rectangle((16, 12, 48, 52), fill=(200, 30, 35))
    answer = ask(backend, "What colour is the shirt?", shot)
    assert answer.text == "The main colour is red (100%), on a white background."
    found = ImageFindings.model_validate(answer.details["images"][0])
    assert found.backdrop == "white" and [c.name for c in found.colors or []] == ["red"]
    check = check_answer(answer.text, [found], "What colour is the shirt?")
    assert check.invented == [] and check.recall == 1.0  # the backdrop is a finding, not an invention


def test_several_images_are_numbered(backend: StarterBackend) -> None:
    answer = ask(backend, "What is this?", Image.fromarray(skdata.coffee()), Image.fromarray(skdata.chelsea()))
    assert answer.text.startswith("Image 1: This looks like an espresso")
    assert "Image 2: " in answer.text and "cat" in answer.text.split("Image 2: ")[1]
    assert len(answer.details["images"]) == 2 and answer.experts == ["tagger"]


def test_no_image_is_a_clear_input_error(backend: StarterBackend) -> None:
    with pytest.raises(InputError) as err:
        ask(backend, "What is the capital of France?")
    assert "no image" in err.value.message and "attach an image" in (err.value.hint or "")
    with pytest.raises(InputError):
        backend.generate([Turn(role="system", parts=("be brief",))])


def test_max_tokens_and_stop_cut_the_answer(backend: StarterBackend) -> None:
    coffee = Image.fromarray(skdata.coffee())
    short = ask(backend, "", coffee, max_new_tokens=3)
    assert short.text == "This looks like" and short.finish_reason == "length" and short.completion_tokens == 3
    stopped = ask(backend, "", coffee, stop=(" (",))
    assert stopped.text == "This looks like an espresso" and stopped.finish_reason == "stop"


def test_create_variants() -> None:
    assert StarterBackend.create("starter:llm").writer == "llm"
    with pytest.raises(InputError):
        StarterBackend.create("starter:poem")
