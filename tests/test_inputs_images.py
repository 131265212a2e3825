"""Decoding image references: data URLs, base64, paths, bytes; bombs, broken files, modes, EXIF, draft."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moesaic.errors import ImageError, MoesaicError, URLPolicyError
from moesaic.inputs import ImagePolicy, encode_image_base64, load_image
from moesaic.inputs.images import decode_base64

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


def close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width``x``height`` with just 8 pixels of data (a bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 8)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


PNG = encoded(halves())
B64 = base64.b64encode(PNG).decode()


def assert_halves(image: Image.Image) -> None:
    assert image.mode == "RGB" and image.size == (40, 20)
    assert image.getpixel((2, 10)) == RED and image.getpixel((37, 10)) == BLUE


# --- references ----------------------------------------------------------------------------------------


def test_data_url_and_bytes_forms_decode_the_same_pixels() -> None:
    data_url = f"data:image/png;base64,{B64}"
    for ref in [data_url, PNG, bytearray(PNG), memoryview(PNG), f"  DATA:image/png;BASE64,{B64}\n"]:
        assert_halves(load_image(ref))


def test_bare_base64_variants() -> None:
    assert_halves(load_image(B64))
    assert_halves(load_image(B64.rstrip("=")))
    assert_halves(load_image(base64.encodebytes(PNG).decode()))  # newlines every 76 characters
    assert_halves(load_image("  " + " \n ".join(B64[i : i + 50] for i in range(0, len(B64), 50))))


def test_urlsafe_base64_is_accepted() -> None:
    data = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert standard.rstrip("=") != urlsafe  # the alphabets really differ for these bytes
    assert np.array_equal(np.asarray(load_image(urlsafe)), np.asarray(load_image(standard)))


@pytest.mark.parametrize("ref,match", [
    ("data:image/png;base64,!!!not*base64", "not valid base64"),
    ("data:image/png;base64,", "empty"),
    ("data:text/plain;base64,aGVsbG8=", "text/plain, not an image"),
    ("data:image/svg+xml;base64,PHN2Zy8+", "SVG"),
    ("data:image/png;base64" + B64, "no ','"),
    ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB" + "A", "impossible length"),
    ("aGVsbG8gd29ybGQsIHRoaXMgaXMgbm90IGFuIGltYWdl", "not an image in an accepted format"),
    ("hello, this is a sentence and not an image!", "not a URL, a data URL or valid base64"),
    ("   ", "empty"),
])
def test_bad_references_are_image_errors(ref: str, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        load_image(ref)
    assert info.value.hint


def test_base64_over_max_bytes_is_refused_before_decoding() -> None:
    limit = len(PNG) // 2
    policy = ImagePolicy(max_bytes=limit)
    for ref in (B64, f"data:image/png;base64,{B64}"):
        with pytest.raises(ImageError, match=f"decodes to about .* bytes, over the limit of {limit}"):
            load_image(ref, policy)
    with pytest.raises(ImageError, match=f"over the limit of {limit}"):
        load_image(PNG, policy)
    assert_halves(load_image(B64, ImagePolicy(max_bytes=len(PNG))))


def test_decode_base64_rejects_foreign_characters() -> None:
    with pytest.raises(ImageError, match="unexpected characters '\\*'"):
        decode_base64("abcd*efg")


def test_wrong_type_is_refused() -> None:
    with pytest.raises(ImageError, match="not int"):
        load_image(42)  # type: ignore[arg-type]


# --- local paths ---------------------------------------------------------------------------------------


def test_local_paths_refused_by_default(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    for ref in (str(path), path, "cat.png", "~/photos/cat.jpg", "C:\\photos\\cat.jpg"):
        with pytest.raises(URLPolicyError, match="local file paths are not allowed") as info:
            load_image(ref)
        assert "base64" in (info.value.hint or "")


def test_local_paths_allowed_for_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    policy = ImagePolicy.for_cli()
    assert_halves(load_image(str(path), policy))
    assert_halves(load_image(path, policy))
    monkeypatch.chdir(tmp_path)
    assert_halves(load_image("a.png", policy))
    with pytest.raises(ImageError, match="no image file at missing.png"):
        load_image("missing.png", policy)


def test_allowed_folders_confine_paths(tmp_path: Path) -> None:
    inside, outside = tmp_path / "served", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "ok.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(PNG)
    (inside / "link.png").symlink_to(outside / "secret.png")
    policy = ImagePolicy.for_server(allowed_folders=[inside])
    assert_halves(load_image(str(inside / "ok.png"), policy))
    for ref in (outside / "secret.png", f"{inside}/../private/secret.png", inside / "link.png"):
        with pytest.raises(URLPolicyError, match="outside the allowed folders"):
            load_image(str(ref), policy)


def test_file_over_max_bytes_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(PNG + b"\0" * 5000)
    with pytest.raises(ImageError, match="over the limit of 1000"):
        load_image(path, ImagePolicy(allow_local_paths=True, max_bytes=1000))


# --- broken, hostile and non-image data ----------------------------------------------------------------


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"just some text, definitely not pixels", "not an image in an accepted format"),
    (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "SVG"),
    (b"<svg width='10' height='10'></svg>", "SVG"),
    (b"<!DOCTYPE html><html><body>403</body></html>", "HTML page"),
    (b"%PDF-1.7\n...", "PDF"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10", "PostScript"),
])
def test_non_images_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        load_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_refused(fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), fmt)
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        load_image(data[: len(data) // 2])
    assert fmt in info.value.message


def test_bomb_header_is_refused_before_any_decoding() -> None:
    # 30000 x 30000 = 9e8 pixels; no pixel data follows, so any decoding attempt would fail differently.
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(png_header(30_000, 30_000))
    with pytest.raises(ImageError, match="8000x8000 = 64000000 pixels, over the limit of 50000000"):
        load_image(png_header(8_000, 8_000))


def test_max_pixels_applies_to_real_images_and_pil_input() -> None:
    policy = ImagePolicy(max_pixels=500)
    with pytest.raises(ImageError, match="40x20 = 800 pixels"):
        load_image(PNG, policy)
    with pytest.raises(ImageError, match="over the limit of 500"):
        load_image(halves(), policy)
    assert load_image(PNG, ImagePolicy(max_pixels=800)).size == (40, 20)


def test_formats_outside_the_policy_are_refused() -> None:
    pcx = encoded(halves(), "PCX")
    with pytest.raises(ImageError, match="not an image in an accepted format"):
        load_image(pcx)
    assert_halves(load_image(pcx, ImagePolicy(formats=["PNG", "PCX"])))


# --- orientation, frames and modes ---------------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    data = encoded(halves(), "JPEG", exif=exif, quality=95)
    image = load_image(data)
    assert image.size == (20, 40)
    assert close(image.getpixel((10, 2)), RED) and close(image.getpixel((10, 37)), BLUE)  # left → top


def test_animated_gif_gives_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = load_image(data)
    assert image.mode == "RGB" and image.getpixel((8, 8)) == RED
    assert getattr(image, "n_frames", 1) == 1


def test_cmyk_is_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta + yellow = red
    assert load_image(encoded(cmyk, "TIFF")).getpixel((4, 4)) == RED
    assert close(load_image(encoded(cmyk, "JPEG", quality=95)).getpixel((4, 4)), RED)


def test_16_bit_grey_is_rescaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.array([[65535, 32768], [1000, 0]], dtype=np.uint16))
    assert grey16.mode == "I;16"
    image = load_image(encoded(grey16, "PNG"))
    assert Image.open(io.BytesIO(encoded(grey16, "PNG"))).mode.startswith("I")
    assert [image.getpixel(p) for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [
        (255, 255, 255), (128, 128, 128), (4, 4, 4), (0, 0, 0)
    ]


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba.putpixel((2, 2), (0, 0, 255, 128))
    image = load_image(encoded(rgba))
    assert image.getpixel((0, 0)) == WHITE and image.getpixel((1, 1)) == RED
    assert close(image.getpixel((2, 2)), (127, 127, 255), tol=2)
    la = Image.new("LA", (2, 2), (0, 0))
    assert load_image(encoded(la)).getpixel((0, 0)) == WHITE
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert load_image(encoded(palette, transparency=0)).getpixel((1, 1)) == WHITE


def test_grey_palette_and_bilevel_become_rgb() -> None:
    assert load_image(encoded(Image.new("L", (3, 3), 77))).getpixel((1, 1)) == (77, 77, 77)
    assert load_image(encoded(Image.new("1", (3, 3), 1))).getpixel((1, 1)) == WHITE
    assert load_image(encoded(halves().convert("P"))).getpixel((2, 2)) == RED


# --- draft mode ----------------------------------------------------------------------------------------


def test_jpeg_draft_decodes_at_reduced_size() -> None:
    rng = np.random.default_rng(2)
    big = Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8))
    data = encoded(big, "JPEG", quality=85)
    assert load_image(data).size == (1024, 768)
    assert load_image(data, ImagePolicy(target_size=128)).size == (256, 192)  # 1/4 scale, both sides ≥ 128
    assert load_image(data, ImagePolicy(target_size=700)).size == (1024, 768)  # not much smaller: full size
    assert load_image(encoded(big, "PNG"), ImagePolicy(target_size=128)).size == (1024, 768)  # JPEG only


# --- encoding for clients ------------------------------------------------------------------------------


def test_encode_image_base64_round_trips(tmp_path: Path) -> None:
    url = encode_image_base64(halves())
    assert url.startswith("data:image/png;base64,")
    assert_halves(load_image(url))
    jpeg = encoded(halves(), "JPEG")
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg)
    for source in (jpeg, path, str(path)):
        url = encode_image_base64(source)
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == jpeg
    rgba = Image.new("RGBA", (4, 4), (0, 255, 0, 255))
    assert encode_image_base64(rgba, format="JPEG").startswith("data:image/jpeg;base64,")


def test_encode_image_base64_refuses_non_images(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not an image"):
        encode_image_base64(b"hello")
    with pytest.raises(ImageError, match="no image file"):
        encode_image_base64(tmp_path / "missing.png")


def test_every_refusal_is_a_moesaic_error_with_a_hint() -> None:
    for ref in (b"", "data:text/html,<b>x</b>", "file:///etc/passwd", "x.png", png_header(9000, 9000)):
        with pytest.raises(MoesaicError) as info:
            load_image(ref)
        assert info.value.message and info.value.hint
        assert os.linesep not in info.value.message
