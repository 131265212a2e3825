"""Generated families of the bad-input corpus: shapes, bit depths, frame counts, body chunk sizes and request
counts, each swept over a range instead of one file. Every case must be a correct 200 or a 4xx naming the
limit (see :mod:`bad_inputs`); the shapes once took the server down (a 1×100000 PNG: 22.5 GB), the counts
blocked its event loop (600 000 empty messages)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

__all__ = ["generated_cases", "ASPECTS", "DEPTHS", "FRAMES", "CHUNKS"]

ASPECTS = [(1, 100_000), (100_000, 1), (3000, 8), (8, 3000), (1, 1000), (1000, 1), (1, 1), (2, 1), (21, 1),
           (4000, 3), (2048, 2048)]
DEPTHS = [("1", "PNG", 1), ("L", "PNG", 128), ("LA", "PNG", (128, 200)), ("P", "PNG", 3), ("I;16", "PNG", 40_000),
          ("I;16", "TIFF", 65_535), ("I", "TIFF", 1 << 20), ("F", "TIFF", 0.5), ("F", "TIFF", 1e6),
          ("RGB", "PPM", (10, 200, 30)), ("I;16", "PPM", 30_000), ("RGBA", "WEBP", (0, 0, 255, 128)),
          ("CMYK", "TIFF", (0, 200, 200, 0)), ("L", "BMP", 77)]
FRAMES = [("GIF", 1), ("GIF", 2), ("GIF", 300), ("PNG", 50), ("WEBP", 40), ("TIFF", 30)]
CHUNKS = [1, 7, 1024, 65_536]


def _encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def _frames(fmt: str, count: int) -> bytes:
    frames = [Image.new("RGB", (16, 16), (i * 7 % 256, 80, 160)) for i in range(count)]
    if fmt == "TIFF":
        return _encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
    return _encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=20, loop=0)


def generated_cases(case: Any, chat: Any, img: Any, data_url: Any, limits: dict[str, Any]) -> list[Any]:
    """The generated cases, built with the corpus's own ``Case``/``chat``/``img``/``data_url`` helpers."""
    out = []
    for width, height in ASPECTS:
        raw = _encoded(Image.new("RGB", (width, height), (200, 30, 30)), "PNG")
        out.append(case(f"aspect_{width}x{height}", 200, None, json=chat(img(data_url(raw)), "hi")))
    for i, (mode, fmt, value) in enumerate(DEPTHS):
        raw = _encoded(Image.new(mode, (64, 48), value), fmt)
        out.append(case(f"depth_{i:02d}_{mode.replace(';', '')}_{fmt.lower()}", 200, None,
                        json=chat(img(data_url(raw, f"image/{fmt.lower()}")), "hi")))
    for fmt, count in FRAMES:
        out.append(case(f"frames_{fmt.lower()}_{count}", 200, None,
                        json=chat(img(data_url(_frames(fmt, count), f"image/{fmt.lower()}")), "hi")))
    body = json.dumps(chat(img(data_url(_encoded(Image.new("RGB", (32, 32), (0, 0, 255)), "PNG"))), "hi")).encode()
    for size in CHUNKS:
        out.append(case(f"body_chunks_of_{size}", 200, None, raw=body, chunk_size=size))
    inv = "invalid_request"
    many = limits.get("max_messages", 256) + 1
    parts = limits.get("max_content_parts", 512) + 1
    out += [
        case("count_empty_messages_over_cap", 400, inv, f"{many} messages given",
             {"model": "tiny", "messages": [{"role": "user", "content": ""}] * many}),
        case("count_empty_parts_over_cap", 400, inv, f"{parts} content parts given",
             {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * parts}]}),
        case("count_50k_empty_messages", 400, inv, "json values",
             raw=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": ""}] * 50_000}).encode()),
        case("count_values_in_unknown_field", 400, inv, "json values",
             raw=b'{"model": "tiny", "pad": [' + b"0," * 400_000 + b'0], "messages": []}'),
        case("echo_huge_model_name", 404, "not_found", "characters)", {"model": "m" * 1_500_000,
                                                                        "messages": [{"role": "user", "content": "hi"}]}),
        case("echo_huge_media_type", 400, "invalid_image", "not an image",
             chat(img("data:image/" + "x" * 1_000_000 + ";base64,AAAA"), "hi")),
    ]
    return out
