"""The starter experts on real photos and rendered text: tagger, OCR, colours, embeddings, load-once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

skdata = pytest.importorskip("skimage.data")


def dejavu() -> Path:
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


def text_image(lines: list[tuple[tuple[int, int], str]], size: tuple[int, int] = (360, 140)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(dejavu()), 26)
    for xy, text in lines:
        draw.text(xy, text, fill="black", font=font)
    return img


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(skdata.coffee())


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skdata.chelsea())


# --- tagger ---------------------------------------------------------------------------------------------

def test_preprocess_shape_and_scale() -> None:
    from moesaic.experts.tagger import preprocess

    x = preprocess(Image.new("RGB", (400, 300), (255, 127, 0)))
    assert tuple(x.shape) == (1, 3, 224, 224)
    assert x[0, 0].mean().item() == pytest.approx((255 - 127) / 128)
    assert x[0, 1].mean().item() == pytest.approx(0.0)
    assert x[0, 2].mean().item() == pytest.approx(-127 / 128)


def test_tagger_names_espresso_and_cat(coffee: Image.Image, chelsea: Image.Image) -> None:
    from moesaic.experts.tagger import Tagger

    tagger = Tagger.shared()
    assert Tagger.shared() is tagger
    tags = tagger.tag(coffee, top_k=3)
    assert tags[0].label == "espresso" and tags[0].score > 0.9
    assert [t.score for t in tags] == sorted((t.score for t in tags), reverse=True)
    cat = tagger.tag(chelsea, top_k=3)
    assert "cat" in cat[0].label and sum(t.score for t in cat if "cat" in t.label) > 0.8
    probs = tagger.probabilities(coffee)
    assert probs.shape == (1000,) and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_imagenet_names_are_short_and_known() -> None:
    from moesaic.experts.tagger import imagenet_names

    names = imagenet_names()
    assert len(names) == 1000
    assert names[967] == "espresso" and names[282] == "tiger cat" and names[281] == "tabby cat"


# --- OCR ------------------------------------------------------------------------------------------------

def test_ocr_reads_rendered_text_in_reading_order() -> None:
    from moesaic.experts.ocr import OCR

    img = text_image([((200, 10), "RIGHT"), ((10, 14), "LEFT SIDE"), ((10, 75), "Open 9 to 5")])
    lines = OCR.shared().read(img)
    assert [ln.text for ln in lines] == ["LEFT SIDE", "RIGHT", "Open 9 to 5"]
    assert all(ln.score > 0.9 and len(ln.box) == 4 for ln in lines)


def test_ocr_finds_no_text_in_a_photo_without_text(coffee: Image.Image) -> None:
    from moesaic.experts.ocr import OCR

    assert OCR.shared().read(coffee) == []


def test_reading_order_rows_then_columns() -> None:
    from moesaic.experts.ocr import TextLine, reading_order

    def line(text: str, x: float, y: float) -> TextLine:
        return TextLine(text, 1.0, [[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]])

    lines = [line("c", 0, 50), line("b", 100, 2), line("a", 0, 0), line("d", 100, 52)]
    assert [ln.text for ln in reading_order(lines)] == ["a", "b", "c", "d"]


# --- colours --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fill", "name"),
    [("#ff0000", "red"), ("#000080", "navy blue"), ("#ffffff", "white"), ("#ffff00", "yellow"),
     ("#008000", "green"), ("#8b4513", "brown"), ("#808080", "grey"), ("#ffc0cb", "pink")],
)
def test_solid_colours_get_their_names(fill: str, name: str) -> None:
    from moesaic.experts.colors import dominant_colors

    found = dominant_colors(Image.new("RGB", (40, 30), fill), k=3)
    assert [(c.name, c.share) for c in found] == [(name, 1.0)]


def test_colour_shares_and_background() -> None:
    from moesaic.experts.colors import dominant_colors

    img = Image.new("RGB", (64, 64), "white")
    img.paste(Image.new("RGB", (32, 32), (0, 0, 200)), (16, 16))  # a blue square, 1/4 of the pixels
    found = dominant_colors(img, k=3)
    assert [c.name for c in found] == ["white", "blue"]
    assert found[1].share == pytest.approx(0.25, abs=0.02) and sum(c.share for c in found) == pytest.approx(1.0)
    only = dominant_colors(img, k=3, ignore_background=True)
    assert [(c.name, c.share) for c in only] == [("blue", 1.0)]
    assert dominant_colors(img, k=3) == found  # deterministic


def test_photo_colours(coffee: Image.Image) -> None:
    from moesaic.experts.colors import dominant_colors

    found = dominant_colors(coffee, k=3)
    assert found[0].name == "brown" and len(found) == 3
    assert found[0].share >= found[1].share >= found[2].share > 0.05


# --- embeddings -----------------------------------------------------------------------------------------

def test_embedder_unit_vectors_and_similarity() -> None:
    from moesaic.experts.embed import Embedder

    vecs = Embedder.shared().encode(["what does the sign say", "read the text on the sign", "a red car"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.linalg.norm(vecs, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert Embedder.shared().encode([]).shape == (0, 384)


# --- load once ------------------------------------------------------------------------------------------

def test_shared_instance_builds_once_across_threads() -> None:
    import time

    from moesaic.experts._shared import shared_instance

    calls: list[int] = []

    def build() -> object:
        calls.append(1)
        time.sleep(0.05)
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(shared_instance(("test", id(calls)), build))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1


def test_failed_build_is_not_cached() -> None:
    from moesaic.experts._shared import shared_instance

    key = ("test-fail", 1)
    with pytest.raises(RuntimeError):
        shared_instance(key, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert shared_instance(key, lambda: 42) == 42
