"""The bad-input corpus: every case is a request a careless or hostile client could send, with the exact
answer the server must give (status, error code, a phrase of the message). Some inputs are *accepted* by
design (animated images → first frame, CMYK/16-bit → RGB): those expect 200.

Images are generated here (no binary fixtures): :func:`cases` builds the list for a server whose hostile
loopback helper listens on ``evil_port`` and whose image limits are :data:`LIMITS`; the generated families
(shapes, bit depths, frame counts, chunk sizes, counts) come from :mod:`hostile_generators`.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from hostile_generators import generated_cases
from reliability_helpers import data_url, png_bytes

__all__ = ["Case", "cases", "LIMITS"]

# the server settings the corpus assumes (the test builds its ServeConfig from them)
LIMITS = {"max_images": 4, "max_image_bytes": 256 * 1024, "max_image_pixels": 2048 * 2048,
          "max_prompt_tokens": 1000, "max_tokens_limit": 64, "image_timeout_s": 1.5,
          "max_body_bytes": 2 * 1024 * 1024}


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str | None  # the error's code (None for accepted requests)
    says: str = ""  # a phrase the error message must contain (lower-case comparison)
    json: Any = None  # a JSON body for /v1/chat/completions
    raw: bytes | None = None  # or raw bytes
    content_type: str = "application/json"
    path: str = "/v1/chat/completions"
    not_says: tuple[str, ...] = field(default_factory=tuple)  # must not leak
    headers: dict[str, str] = field(default_factory=dict)  # extra headers; "SELF" stands for the server's URL
    chunk_size: int | None = None  # send ``raw`` in chunks of this many bytes (chunked transfer encoding)


def chat(*parts: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": content}], **extra}


def escaped(body: Any) -> bytes:
    """JSON with non-ASCII escaped: a lone surrogate in ``body`` becomes a valid JSON escape (``\\ud800``)."""
    return json.dumps(body, ensure_ascii=True).encode("ascii")


def img(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 60_000) -> bytes:
    """A valid-looking 1-bit PNG declaring side×side pixels whose data is a few hundred bytes of zlib."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
    rows = zlib.compress(b"\0" * (1 + side // 8) * 64, 9)  # the first rows only: it never gets that far
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to claim width×height."""
    raw = bytearray(encoded(Image.new("RGB", (16, 16), (200, 10, 10)), "JPEG"))
    at = raw.index(b"\xff\xc0")  # baseline SOF0: marker, length(2), precision(1), height(2), width(2)
    raw[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def gif_screen(width: int, height: int) -> bytes:
    raw = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    raw[6:10] = struct.pack("<HH", width, height)  # the logical screen size
    return bytes(raw)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def sixteen_bit_png() -> bytes:
    return encoded(Image.new("I;16", (32, 32), 40000), "PNG")


def image_cases() -> list[Case]:
    png = png_bytes()
    noise = Image.frombytes("RGB", (128, 128), bytes(range(256)) * 192)
    jpeg = encoded(noise, "JPEG", quality=95)  # big enough that half of it keeps the whole header
    bad = "invalid_image"
    return [
        Case("base64_bad_chars", 400, bad, "not valid base64", chat(img("data:image/png;base64,@@@!!!***"), "hi")),
        Case("base64_truncated_length", 400, bad, "impossible length", chat(img(b64(png)[:-3]), "hi")),
        Case("base64_truncated_png", 400, bad, "truncated or corrupt", chat(img(data_url(png[: len(png) // 2])), "hi")),
        Case("data_url_without_comma", 400, bad, "no ','", chat(img("data:image/png;base64"), "hi")),
        Case("data_url_text_plain", 400, bad, "holds text/plain", chat(img("data:text/plain;base64," + b64(b"hi")), "hi")),
        Case("data_url_svg", 400, bad, "svg", chat(img(data_url(b"<svg/>", "image/svg+xml")), "hi")),
        Case("zero_byte_data_url", 400, bad, "empty", chat(img("data:image/png;base64,"), "hi")),
        Case("empty_image_reference", 400, bad, "empty", chat(img("   "), "hi")),
        Case("non_image_bytes", 400, bad, "not an image in an accepted format",
             chat(img(data_url(b"just some text, certainly not pixels" * 4)), "hi")),
        Case("png_magic_then_garbage", 400, bad, "", chat(img(data_url(png[:8] + b"\x00garbage" * 20)), "hi")),
        Case("png_header_only", 400, bad, "", chat(img(data_url(png[:33])), "hi")),
        Case("jpeg_truncated", 400, bad, "truncated or corrupt", chat(img(data_url(jpeg[: len(jpeg) // 2], "image/jpeg")), "hi")),
        Case("svg_bytes_as_png", 400, bad, "svg", chat(img(data_url(b'<?xml version="1.0"?><svg xmlns="x"/>')), "hi")),
        Case("pdf_bytes", 400, bad, "pdf", chat(img(data_url(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")), "hi")),
        Case("eps_bytes", 400, bad, "postscript", chat(img(data_url(b"%!PS-Adobe-3.0 EPSF-3.0\n")), "hi")),
        Case("html_bytes", 400, bad, "html", chat(img(data_url(b"<!DOCTYPE html><html></html>")), "hi")),
        Case("psd_format_not_enabled", 400, bad, "not an image in an accepted format",
             chat(img(data_url(b"8BPS\x00\x01" + b"\x00" * 64)), "hi")),
        Case("png_pixel_bomb", 400, bad, "too large to decode safely", chat(img(data_url(png_bomb())), "hi")),
        Case("png_over_pixel_limit", 400, bad, "over the limit", chat(img(data_url(png_bomb(5000))), "hi")),
        Case("jpeg_huge_dimensions", 400, bad, "too large to decode safely",
             chat(img(data_url(jpeg_with_size(65000, 65000), "image/jpeg")), "hi")),
        Case("gif_huge_screen", 400, bad, "too large to decode safely", chat(img(data_url(gif_screen(65535, 65535), "image/gif")), "hi")),
        Case("image_over_byte_limit", 400, bad, "over the limit",
             chat(img(data_url(png + b"\0" * LIMITS["max_image_bytes"])), "hi")),
        Case("animated_gif_first_frame", 200, None, json=chat(img(data_url(animated("GIF"), "image/gif")), "hi")),
        Case("animated_webp_first_frame", 200, None, json=chat(img(data_url(animated("WEBP"), "image/webp")), "hi")),
        Case("cmyk_jpeg_to_rgb", 200, None,
             json=chat(img(data_url(encoded(Image.new("CMYK", (32, 32), (0, 200, 200, 0)), "JPEG"), "image/jpeg")), "hi")),
        Case("sixteen_bit_png", 200, None, json=chat(img(data_url(sixteen_bit_png())), "hi")),
        Case("palette_png_with_transparency", 200, None,
             json=chat(img(data_url(encoded(Image.new("P", (32, 32), 0), "PNG", transparency=0))), "hi")),
        Case("bare_base64_url_safe_unpadded", 200, None,
             json=chat(img(base64.urlsafe_b64encode(png).decode().rstrip("=")), "hi")),
    ]


def request_cases() -> list[Case]:
    inv = "invalid_request"
    five = [img(data_url(png_bytes((i * 40, 0, 0)))) for i in range(5)]
    return [
        Case("body_not_json", 400, inv, "not valid json", raw=b"{model: tiny", content_type="application/json"),
        Case("body_bad_utf8", 400, inv, "not valid json", raw=b'{"model": "tiny\xff\xfe"}'),
        Case("body_json_array", 400, inv, "must be a json object", json=[GOODISH]),
        Case("body_empty", 400, inv, "must be a json object", raw=b""),
        Case("json_deeply_nested", 400, inv, "json values", raw=b"[" * 100_000 + b"]" * 100_000),
        Case("json_huge_integer", 400, inv, "not valid json", raw=b'{"model": "tiny", "max_tokens": ' + b"9" * 5000 + b"}"),
        Case("messages_is_a_string", 400, inv, "messages", {"model": "tiny", "messages": "hello"}),
        Case("messages_empty", 400, inv, "messages", {"model": "tiny", "messages": []}),
        Case("content_is_a_number", 400, inv, "messages", {"model": "tiny", "messages": [{"role": "user", "content": 7}]}),
        Case("unknown_role", 400, inv, "role", {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}),
        Case("unknown_part_type", 400, inv, "messages", chat({"type": "hologram", "hologram": "x"})),
        Case("image_part_without_url", 400, inv, "image_url.url: field required",
             chat({"type": "image_url", "image_url": {}})),
        Case("model_missing", 400, inv, "model", {"messages": [{"role": "user", "content": "hi"}]}),
        Case("model_not_served", 404, "not_found", "not served here", chat("hi") | {"model": "gpt-5"}),
        Case("max_tokens_zero", 400, inv, "max_tokens", chat("hi", max_tokens=0)),
        Case("max_tokens_negative", 400, inv, "max_tokens", chat("hi", max_tokens=-5)),
        Case("max_tokens_over_limit", 400, inv, "max_tokens", chat("hi", max_tokens=10**9)),
        Case("max_tokens_wrong_type", 400, inv, "max_tokens", chat("hi", max_tokens="ten")),
        Case("temperature_wrong_type", 400, inv, "temperature", chat("hi", temperature={"a": 1})),
        Case("too_many_stop_strings", 400, inv, "stop", chat("hi", stop=["a", "b", "c", "d", "e"])),
        Case("too_many_images", 400, inv, "image", chat(*five, "hi")),
        Case("prompt_too_long", 400, inv, "too long", chat("word " * 2000)),
        Case("body_over_size_limit", 413, None, "", raw=b'{"pad": "' + b"x" * LIMITS["max_body_bytes"] + b'"}'),
        Case("unknown_top_level_field_ignored", 200, None, json=chat("hi", frobnicate=True, logit_bias={"1": 2})),
        Case("nul_and_control_chars_in_text", 200, None, json=chat("a\u0000b\u0007c\u202e")),
        Case("invocations_unknown_field", 400, inv, "unknown field", {"question": "hi", "surprise": 1},
             path="/invocations"),
        Case("invocations_bad_utf8", 400, inv, "not valid json", raw=b'{"question": "caf\xe9"}', path="/invocations"),
        Case("lone_surrogate_in_text", 400, inv, "unpaired utf-16 surrogate",
             raw=escaped(GOODISH | {"messages": [{"role": "user", "content": "a\ud800b"}]})),
        Case("lone_surrogate_in_text_part", 400, inv, "unpaired utf-16 surrogate",
             raw=escaped(chat({"type": "text", "text": "\udfff"}))),
        Case("lone_surrogate_in_invocations_question", 400, inv, "question", raw=escaped({"question": "\ud83d"}),
             path="/invocations"),
        Case("lone_surrogate_in_stop", 400, inv, "stop", raw=escaped(chat("hi", stop=["\ud800"]))),
        Case("lone_surrogate_in_image_url", 400, inv, "image_url.url",
             raw=escaped(chat(img("http://\ud800.test/a.png"), "hi"))),
        Case("temperature_subnormal_is_greedy", 200, None, json=chat("hi", temperature=5e-324, seed=3)),
        Case("temperature_out_of_range", 400, inv, "temperature", chat("hi", temperature=2.5)),
        Case("image_url_wrong_type", 400, inv, "image_url", chat({"type": "image_url", "image_url": 5})),
        Case("stream_wrong_type", 400, inv, "stream", chat("hi", stream="perhaps")),
        Case("cross_site_simple_post", 403, "cross_origin", "cross-origin", raw=json.dumps(GOODISH).encode(),
             content_type="text/plain", headers={"Origin": "http://attacker.example"}),
        Case("cross_site_opaque_origin", 403, "cross_origin", "cross-origin", raw=json.dumps(GOODISH).encode(),
             content_type="application/x-www-form-urlencoded", headers={"Origin": "null"}),
        Case("same_origin_page_accepted", 200, None, json=chat("hi"), headers={"Origin": "SELF"}),
        Case("invocations_garbage_image_bytes", 400, "invalid_image", "not an image", raw=b"\x00\x01garbage",
             content_type="image/png", path="/invocations"),
    ]


GOODISH = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def url_cases(evil_port: int, loop_port: int) -> list[Case]:
    evil = f"http://evil.test:{evil_port}"
    pol, fetch = "url_not_allowed", "image_fetch_failed"
    url = lambda u, **kw: chat(img(u), "hi", **kw)  # noqa: E731
    return [
        Case("loopback_v4", 400, pol, "loopback", url(f"http://127.0.0.1:{loop_port}/red.png")),
        Case("loopback_other_127", 400, pol, "loopback", url(f"http://127.5.6.7:{loop_port}/red.png")),
        Case("localhost_name", 400, pol, "loopback", url(f"http://localhost:{loop_port}/red.png")),
        Case("loopback_decimal_ip", 400, pol, "loopback", url(f"http://2130706433:{loop_port}/red.png")),
        Case("private_10", 400, pol, "private", url("http://10.0.0.1/")),
        Case("private_192_168", 400, pol, "private", url("http://192.168.1.1/")),
        Case("private_172_16", 400, pol, "private", url("http://172.16.5.4/")),
        Case("cgnat_100_64", 400, pol, "shared", url("http://100.64.0.1/")),
        Case("metadata_v4", 400, pol, "metadata", url("http://169.254.169.254/latest/meta-data/")),
        Case("link_local_v4", 400, pol, "link-local", url("http://169.254.10.10/")),
        Case("unspecified_v4", 400, pol, "unspecified", url(f"http://0.0.0.0:{loop_port}/red.png")),
        Case("loopback_v6", 400, pol, "loopback", url(f"http://[::1]:{loop_port}/red.png")),
        Case("mapped_v6_loopback", 400, pol, "wrapping 127.0.0.1", url(f"http://[::ffff:127.0.0.1]:{loop_port}/red.png")),
        Case("mapped_v6_metadata", 400, pol, "metadata", url("http://[::ffff:169.254.169.254]/")),
        Case("link_local_v6", 400, pol, "link-local", url("http://[fe80::1]/")),
        Case("ula_v6", 400, pol, "private", url("http://[fd12:3456::1]/")),
        Case("credentials_not_echoed", 400, pol, "loopback", url(f"http://admin:hunter2@127.0.0.1:{loop_port}/red.png"),
             not_says=("hunter2",)),
        Case("dns_to_loopback", 400, pol, "resolved from loopback.test", url(f"http://loopback.test:{loop_port}/red.png")),
        Case("dns_to_private", 400, pol, "private", url("http://private.test/")),
        Case("dns_to_metadata", 400, pol, "metadata", url("http://metadata.test/")),
        Case("dns_any_address_private", 400, pol, "192.168.0.7", url("http://mixed.test/")),
        Case("dns_to_v6_loopback", 400, pol, "loopback", url(f"http://v6loop.test:{loop_port}/red.png")),
        Case("dns_to_mapped_loopback", 400, pol, "wrapping", url(f"http://mapped.test:{loop_port}/red.png")),
        Case("dns_unresolvable", 400, fetch, "cannot resolve", url("http://nx.test/a.png")),
        Case("redirect_to_loopback", 400, pol, "loopback",
             url(f"{evil}/redirect?to=http://127.0.0.1:{loop_port}/red.png")),
        Case("redirect_to_metadata", 400, pol, "metadata",
             url(f"{evil}/redirect?to=http://169.254.169.254/latest/meta-data/")),
        Case("redirect_to_dns_private", 400, pol, "private", url(f"{evil}/redirect?to=http://private.test/x.png")),
        Case("redirect_to_file", 400, pol, "scheme 'file'", url(f"{evil}/redirect?to=file:///etc/passwd")),
        Case("redirect_to_v6_loopback", 400, pol, "loopback",
             url(f"{evil}/redirect?to=http://[::1]:{loop_port}/red.png")),
        Case("redirect_to_mapped_private", 400, pol, "wrapping 10.0.0.1",
             url(f"{evil}/redirect?to=http://[::ffff:10.0.0.1]/x.png")),
        Case("redirect_to_gopher", 400, pol, "scheme 'gopher'", url(f"{evil}/redirect?to=gopher://example.com/_x")),
        Case("redirect_loop", 400, fetch, "redirected more than", url(f"{evil}/loop")),
        Case("file_scheme", 400, pol, "scheme 'file'", url("file:///etc/passwd")),
        Case("ftp_scheme", 400, pol, "scheme 'ftp'", url("ftp://example.com/a.png")),
        Case("gopher_scheme", 400, pol, "scheme 'gopher'", url("gopher://example.com:70/_GET")),
        Case("local_path", 400, pol, "local file paths are not allowed", url("/etc/passwd")),
        Case("slow_drip_body", 400, fetch, "took longer", url(f"{evil}/drip")),
        Case("endless_body", 400, fetch, "more than the limit", url(f"{evil}/endless")),
        Case("declared_huge_length", 400, fetch, "over the limit", url(f"{evil}/huge-declared")),
        Case("html_page_url", 400, fetch, "text/html, not an image", url(f"{evil}/html")),
        Case("svg_url", 400, "invalid_image", "svg", url(f"{evil}/svg")),
        Case("url_404", 400, fetch, "http 404", url(f"{evil}/missing.png")),
        Case("allowlisted_url_accepted", 200, None, json=url(f"{evil}/red.png")),
    ]


def cases(evil_port: int, loop_port: int) -> list[Case]:
    generated = generated_cases(Case, chat, img, data_url, LIMITS)
    return image_cases() + request_cases() + url_cases(evil_port, loop_port) + generated
