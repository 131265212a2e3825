"""Bounded image shapes: every decoded image has its longest side and aspect ratio inside the policy, thin
images are letterboxed (not refused), high bit depths decode in Pillow's C code, and the experts' own resizes
stay bounded on both sides whatever the input shape."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from moesaic.inputs.decode import decode_image
from moesaic.inputs.images import load_image
from moesaic.inputs.policy import ImagePolicy
from moesaic.inputs.shape import fit_shape, fitted_size

THIN = [(1, 100_000), (100_000, 1), (3000, 8), (8, 3000), (1, 1000), (21, 1), (1, 1), (640, 480)]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size", THIN)
def test_decoded_images_have_bounded_side_and_aspect(size):
    policy = ImagePolicy(max_side=4096, max_aspect_ratio=20)
    out = decode_image(png(Image.new("RGB", size, (200, 0, 0))), policy)
    long, short = max(out.size), min(out.size)
    assert long <= 4096 and long / short <= 20, out.size
    assert out.mode == "RGB"
    if size == (640, 480):
        assert out.size == size  # ordinary images are untouched
    # the content keeps its colour; the padding is white
    assert out.getpixel((out.width // 2, out.height // 2)) == (200, 0, 0)


def test_letterbox_is_centred_and_sizes_are_exact():
    assert fitted_size((3000, 8), max_side=8192, max_aspect=20) == ((3000, 8), (3000, 150))
    assert fitted_size((1, 100_000), max_side=8192, max_aspect=20) == ((1, 8192), (410, 8192))
    assert fitted_size((640, 480), max_side=8192, max_aspect=20) == ((640, 480), (640, 480))
    image = Image.new("RGB", (3000, 8), (0, 0, 255))
    out = fit_shape(image, max_side=8192, max_aspect=20)
    assert out.size == (3000, 150)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1500, 75)) == (0, 0, 255)
    assert out.getpixel((1500, 71)) == (0, 0, 255) and out.getpixel((1500, 70)) == (255, 255, 255)  # rows 71..78
    same = Image.new("RGB", (10, 10))
    assert fit_shape(same) is same


def test_pil_images_given_directly_are_bounded_too():
    out = load_image(Image.new("L", (1, 50_000), 9), ImagePolicy(max_side=1000, max_aspect_ratio=10))
    assert out.size == (100, 1000) and out.mode == "RGB"


@pytest.mark.parametrize("mode,value,fmt,expect", [
    ("F", 0.5, "TIFF", 128), ("F", 200.0, "TIFF", 200), ("I;16", 32768, "PNG", 128), ("I;16", 65535, "PNG", 255),
    ("I", 70_000, "TIFF", 255), ("I;16", 257 * 40, "PPM", 40),
])
def test_high_bit_depths_scale_to_eight_bits(mode, value, fmt, expect):
    buf = io.BytesIO()
    Image.new(mode, (8, 8), value).save(buf, format=fmt)
    out = decode_image(buf.getvalue(), ImagePolicy())
    assert out.getpixel((3, 3)) == (expect, expect, expect)


def test_a_float_tiff_at_the_pixel_limit_decodes_at_bounded_cost():
    """A 4096² float32 TIFF compresses to ~100 KB; numpy float64 passes took ~10 s and 1.3 GB."""
    buf = io.BytesIO()
    Image.new("F", (4096, 4096), 0.25).save(buf, format="TIFF", compression="tiff_adobe_deflate")
    assert len(buf.getvalue()) < 200_000
    started = time.perf_counter()
    out = decode_image(buf.getvalue(), ImagePolicy(max_pixels=4096 * 4096))
    assert out.size == (4096, 4096) and out.getpixel((0, 0)) == (64, 64, 64)
    assert time.perf_counter() - started < 8  # a few passes in C (under 1 s on an idle core)


def test_nan_and_infinite_floats_do_not_break_scaling():
    import numpy as np

    arr = np.array([[np.nan, 0.5, np.inf, -1.0]], dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, format="TIFF")
    out = decode_image(buf.getvalue(), ImagePolicy(max_aspect_ratio=4))
    row = out.height // 2
    assert [out.getpixel((x, row))[0] for x in range(4)] == [0, 128, 255, 0]


@pytest.mark.parametrize("size", THIN)
def test_tagger_preprocessing_is_bounded(size, monkeypatch):
    tagger = pytest.importorskip("moesaic.experts.tagger")
    resized: list[tuple[int, int]] = []
    real = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, s, *a, **k: resized.append(tuple(s)) or real(self, s, *a, **k))
    x = tagger.preprocess(Image.new("RGB", size, (0, 120, 0)))
    assert tuple(x.shape) == (1, 3, 224, 224)
    assert all(max(s) <= tagger.RESIZE * tagger.MAX_ASPECT and min(s) >= 1 for s in resized), resized


def test_ocr_reads_a_thin_banner_and_maps_boxes_back(monkeypatch):
    """A 900×40 banner is letterboxed to 4:1 for the detector; its text is read and the boxes come back in
    the banner's own coordinates. Every array rapidocr receives stays within 2000 × 500."""
    ocr_module = pytest.importorskip("moesaic.experts.ocr")
    from PIL import ImageDraw, ImageFont

    banner = Image.new("RGB", (900, 40), (255, 255, 255))
    ImageDraw.Draw(banner).text((20, 4), "SUMMER SALE 50", fill=(0, 0, 0), font=ImageFont.load_default(size=30))
    ocr = ocr_module.OCR.shared()
    seen: list[tuple[int, ...]] = []
    engine = ocr.engine
    monkeypatch.setattr(ocr, "engine", lambda arr: seen.append(arr.shape) or engine(arr))
    lines = ocr.read(banner)
    assert seen == [(225, 900, 3)]  # 900 / 4 = 225 rows: padded, not stretched
    text = " ".join(line.text for line in lines).replace(" ", "").upper()
    assert "SUMMER" in text and "SALE" in text, lines
    for line in lines:
        assert all(-6 <= x <= 906 and -6 <= y <= 46 for x, y in line.box), line.box  # unmapped: y ≈ 93 + …
    assert ocr.read(Image.new("RGB", (1, 1000), (0, 0, 0))) == []  # a 1×1000 strip: no text, no error
