"""Routing decisions on real questions, the grounded writer's sentences, and the fact check."""

from __future__ import annotations

import pytest

from moesaic.experts.factcheck import check_answer
from moesaic.experts.findings import ColorFinding, ImageFindings, TagFinding, TextFinding
from moesaic.experts.router import GENERIC, Route, Router, keyword_experts
from moesaic.experts.writer import asked_thing, grounded_answer, pct, with_article

# question → experts the router must pick
CASES = [
    ("What does the sign say?", ("ocr",)),
    ("Read the text", ("ocr",)),
    ("Transcribe the label please", ("ocr",)),
    ("What is written on the board?", ("ocr",)),
    ("What colour is the car?", ("colors",)),
    ("Is the shirt red or blue?", ("colors",)),
    ("what shade of green is the wall", ("colors",)),
    ("Which breed is this dog?", ("tagger",)),
    ("What drink is in the cup?", ("tagger",)),
    ("Is there a cat?", ("tagger",)),
    ("What is in this image?", GENERIC),
    ("Describe the picture", GENERIC),
    ("", GENERIC),
]


@pytest.mark.parametrize(("question", "experts"), CASES)
def test_similarity_routing(question: str, experts: tuple[str, ...]) -> None:
    route = Router("embed").route(question)
    assert route.experts == experts, route.scores


@pytest.mark.parametrize(("question", "experts"), CASES)
def test_auto_routing_agrees(question: str, experts: tuple[str, ...]) -> None:
    assert Router("auto").route(question).experts == experts


def test_keywords_decide_without_the_embedder_and_combine() -> None:
    router = Router("auto")
    route = router.route("what colour is the text?")
    assert route.experts == ("ocr", "colors") and route.reason == "keywords"
    assert router._desc_vecs is None  # MiniLM was not needed
    assert router.route("What is in this image?").generic
    assert router.route("What is this?").experts == ("tagger",)
    assert keyword_experts("nothing to see") == ()
    assert Router("keywords").route("whats going on here") == Route(GENERIC, "fallback", generic=True)


# --- grounded writer ------------------------------------------------------------------------------------

ESPRESSO = ImageFindings(
    tags=[TagFinding(label="espresso", score=0.957), TagFinding(label="cup", score=0.014)],
    colors=[ColorFinding(name="brown", rgb=(181, 110, 67), share=0.36), ColorFinding(name="black", rgb=(9, 9, 9), share=0.16)],
    text=[],
)
CAT = ImageFindings(tags=[TagFinding(label="tiger cat", score=0.38), TagFinding(label="Egyptian cat", score=0.37)])
SIGN = ImageFindings(text=[TextFinding(text="HELLO", score=0.99, box=[]), TextFinding(text="Open 9 to 5", score=0.97, box=[])])


def test_helpers() -> None:
    assert (pct(0.957), pct(0.004)) == ("96%", "<1%")
    assert (with_article("espresso"), with_article("tiger cat")) == ("an espresso", "a tiger cat")
    assert asked_thing("Is there a cat?") == "cat" and asked_thing("Are these any dogs") == "dogs"
    assert asked_thing("What is this?") is None


def test_generic_answer_states_the_findings() -> None:
    text = grounded_answer("What is in this image?", Router().route(""), [ESPRESSO])
    assert text == "This looks like an espresso (96%). Dominant colours: brown (36%), black (16%)."


def test_specific_answers() -> None:
    route = Route(("colors",), "keywords")
    assert grounded_answer("what colour?", route, [ESPRESSO]) == "The main colours are brown (36%) and black (16%)."
    assert grounded_answer("What is this?", Route(("tagger",), "keywords"), [CAT]) == (
        "This looks like a cat (75%), most likely a tiger cat (38%) or an Egyptian cat (37%)."
    )
    mixed = ImageFindings(tags=[TagFinding(label="missile", score=0.38), TagFinding(label="projectile", score=0.25)])
    assert grounded_answer("What is this?", Route(("tagger",), "keywords"), [mixed]) == (
        "This might be a missile (38%) or a projectile (25%)."
    )
    assert grounded_answer("Is there a cat?", Route(("tagger",), "keywords"), [CAT]) == "Yes: it looks like a tiger cat (38%)."
    assert grounded_answer("Is this a dog?", Route(("tagger",), "keywords"), [CAT]) == (
        "I don't see a dog; it looks like a tiger cat (38%)."
    )
    ocr = Route(("ocr",), "keywords")
    assert grounded_answer("What does it say?", ocr, [SIGN]) == 'The text reads: "HELLO" / "Open 9 to 5".'
    assert grounded_answer("What does it say?", ocr, [ESPRESSO.model_copy(update={"tags": None, "colors": None})]) == (
        "I could not find any legible text."
    )


def test_generic_answer_skips_weak_text_and_numbers_images() -> None:
    noisy = CAT.model_copy(update={"text": [TextFinding(text="0", score=0.9, box=[])]})
    text = grounded_answer("", Router().route(""), [ESPRESSO, noisy])
    assert text.startswith("Image 1: This looks like an espresso (96%).")
    assert "Image 2: This looks like a cat (75%), most likely a tiger cat (38%)" in text and '"0"' not in text


# --- fact check -----------------------------------------------------------------------------------------

def test_fact_check_counts_stated_and_invented() -> None:
    good = check_answer("This looks like an espresso (96%). Dominant colours: brown (36%), black (16%).", [ESPRESSO])
    assert good.facts == ["espresso", "brown", "black"] and good.recall == 1.0 and good.invented == []
    bad = check_answer("A golden retriever sits on a red sofa, 3 cups of espresso.", [ESPRESSO])
    assert bad.stated == ["espresso"] and bad.recall == pytest.approx(1 / 3)
    assert {"golden retriever", "red", "3"} <= set(bad.invented)
    asked = check_answer("No, I don't see a dog here.", [CAT], question="Is this a dog?")
    assert "dog" not in asked.invented
    sign = check_answer('It says "HELLO" and "Open 9 to 5".', [SIGN])
    assert sign.recall == 1.0 and sign.invented == []


def test_unsure_tagger_says_so() -> None:
    weak = ImageFindings(tags=[TagFinding(label="analog clock", score=0.03), TagFinding(label="stopwatch", score=0.02)])
    assert grounded_answer("What is this?", Route(("tagger",), "keywords"), [weak]) == (
        "I am not sure what this shows (best guess: an analog clock, 3%)."
    )
