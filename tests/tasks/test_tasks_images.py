"""caption / tag / vqa on real photos (skimage) with the starter experts, and the VLM-side parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from moesaic.errors import ImageError, InputError
from moesaic.tasks.base import open_image
from moesaic.tasks.caption import CaptionConfig, caption, compose_caption
from moesaic.tasks.findings import Findings
from moesaic.tasks.tag import TagConfig, parse_tag_list, tag


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee", "rocket"):
        out[name] = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(out[name])
    return out


def test_tags_on_real_photos_are_sensible(photos: dict[str, Path]) -> None:
    coffee = tag(TagConfig(image=str(photos["coffee"]), top_k=3))
    assert coffee.tags[0].label == "espresso" and coffee.tags[0].score > 0.8
    assert coffee.scored_by == "probability" and coffee.experts == ["tagger"]
    cat = tag(TagConfig(image=str(photos["chelsea"]), top_k=3))
    assert all("cat" in t.label for t in cat.tags)  # tiger cat, Egyptian cat, tabby cat
    rocket = tag(TagConfig(image=str(photos["rocket"]), top_k=3))
    assert {"missile", "projectile"} & {t.label for t in rocket.tags}
    scores = [t.score for t in cat.tags]
    assert scores == sorted(scores, reverse=True)


def test_tag_threshold_and_top_k(photos: dict[str, Path]) -> None:
    high = tag(TagConfig(image=str(photos["coffee"]), top_k=5, threshold=0.5))
    assert [t.label for t in high.tags] == ["espresso"]
    assert len(tag(TagConfig(image=str(photos["chelsea"]), top_k=2)).tags) == 2
    nothing = tag(TagConfig(image=str(photos["chelsea"]), top_k=2, threshold=0.99))
    assert nothing.tags == [] and "no tag" in nothing.render()


def test_captions_brief_and_detailed(photos: dict[str, Path]) -> None:
    brief = caption(CaptionConfig(image=str(photos["coffee"])))
    assert brief.text.startswith("A photo of an espresso") and "brown" in brief.text
    assert brief.seconds > 0 and "tagger" in brief.experts and "colors" in brief.experts
    detailed = caption(CaptionConfig(image=str(photos["chelsea"]), detail="detailed"))
    assert "cat" in detailed.text and "Colours by area" in detailed.text and "%" in detailed.text
    assert len(detailed.text) > len(brief.text)


def test_caption_hedges_when_unsure() -> None:
    found = Findings(tags=[("bobsled", 0.13)], colours=[("grey", 0.5)], text=["HELLO"])
    text = compose_caption(found, "brief")
    assert text == 'A photo of possibly a bobsled, mostly grey. It reads "HELLO".'


def test_parse_tag_list_from_model_text() -> None:
    assert parse_tag_list("1. Cat, 2) dog\n- tree.\n- cat", 5) == ["cat", "dog", "tree"]
    assert parse_tag_list("red; shirt; cotton", 2) == ["red", "shirt"]


def test_bad_images_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        open_image(str(tmp_path / "missing.png"))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        caption(CaptionConfig(image=str(junk)))
    eps = tmp_path / "drawing.eps"
    eps.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a readable image"):  # no Ghostscript-backed decoders
        open_image(str(eps))
    with pytest.raises(InputError):
        tag(TagConfig(image=str(tmp_path)))
