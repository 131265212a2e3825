"""Image ingest: a base64 4000×3000 JPEG (as a client sends it) to model-ready pixels, moesaic's decode path
against the naive one, measured in the same run on the same bytes with the same image processor.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_ingest.py --repeats 7

Paths, each ending in ``pixel_values`` from a SmolVLM-256M-style Idefics3 image processor:

* ``naive``: ``base64.b64decode`` → ``PIL.Image.open`` full decode → ``convert("RGB")`` → PIL ``resize`` to
  the model's side (longest edge) → processor. This is the peer the goal names.
* ``naive, processor resizes``: the same without the explicit ``resize`` (the processor resizes the
  full-size image itself), the usual transformers snippet.
* ``moesaic, no target``: :func:`moesaic.inputs.load_image` under the server policy as it stands without a
  target size (full decode, checks, EXIF, RGB) → processor.
* ``moesaic``: the same with ``ImagePolicy.target_size`` set to the model's side, so libjpeg decodes at
  1/2, 1/4 or 1/8 scale (DCT scaling via ``Image.draft``) when the image is at least that much larger.
* ``same, stdlib base64 (proposed)``: that path with ``base64.b64decode`` in place of moesaic's tolerant
  base64 decoder (whose whitespace-stripping regex dominates on a 5 MB string): a proposed fast path, measured
  here, not yet in moesaic.

Two processor settings: one 512 px tile (``do_image_splitting=False``, what benchmarks/serve_throughput.py
serves) and SmolVLM-256M's own (longest edge 2048, split into 512 px tiles). Times are medians over
``--repeats`` rounds, the paths taking turns within each round. Fixed seed; the JPEG is synthetic (smooth
gradients plus seeded noise and shapes, quality 90), so its entropy is photo-like, not a real photo's.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SEED = 0
WIDTH, HEIGHT = 4000, 3000


def synthetic_jpeg(width: int = WIDTH, height: int = HEIGHT, quality: int = 90, seed: int = SEED) -> bytes:
    """A photo-like JPEG: colour gradients, seeded low-amplitude noise and a few filled shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)  # (height, width) each
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 97.0) * np.cos(y / 61.0)], axis=-1)
    rgb += rng.normal(0, 12, size=rgb.shape).astype(np.float32)  # (height, width, 3): sensor-like noise
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width - 400)), int(rng.integers(0, height - 400))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse((x0, y0, x0 + int(rng.integers(50, 400)), y0 + int(rng.integers(50, 400))), fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_processor(split: bool) -> Any:
    """SmolVLM-256M-style Idefics3 image processor: one 512 px tile, or longest edge 2048 in 512 px tiles."""
    from transformers import Idefics3ImageProcessorPil

    side = 2048 if split else 512
    return Idefics3ImageProcessorPil(do_image_splitting=split, size={"longest_edge": side},
                                     max_image_size={"longest_edge": 512})


def model_side(processor: Any) -> int:
    """The longest edge the processor resizes to: the size worth decoding at."""
    return int(processor.size["longest_edge"])


def naive(data_url: str, processor: Any, resize: bool) -> Any:
    raw = base64.b64decode(data_url.partition(",")[2])
    image = Image.open(io.BytesIO(raw)).convert("RGB")  # full 4000×3000 decode
    if resize:
        side = model_side(processor)
        scale = side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    return processor(images=[[image]], return_tensors="pt")["pixel_values"]  # (1, tiles, 3, 512, 512)


def moesaic(data_url: str, processor: Any, target: int | None) -> Any:
    from moesaic.inputs import ImagePolicy, load_image

    image = load_image(data_url, ImagePolicy.for_server(target_size=target))
    return processor(images=[[image]], return_tensors="pt")["pixel_values"]  # (1, tiles, 3, 512, 512)


def moesaic_fast_base64(data_url: str, processor: Any, target: int) -> Any:
    """moesaic's decode with the stdlib's base64 decoder in front: what a fast path in
    ``moesaic.inputs.images.decode_base64`` would give (not in moesaic yet)."""
    from moesaic.inputs import ImagePolicy
    from moesaic.inputs.decode import decode_image

    raw = base64.b64decode(data_url.partition(",")[2], validate=True)
    image = decode_image(raw, ImagePolicy.for_server(target_size=target))
    return processor(images=[[image]], return_tensors="pt")["pixel_values"]  # (1, tiles, 3, 512, 512)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - start), out


def run(data_url: str, split: bool, repeats: int) -> list[dict[str, Any]]:
    processor = image_processor(split)
    side = model_side(processor)
    paths: dict[str, Callable[[], Any]] = {
        "naive (full decode + PIL resize)": lambda: naive(data_url, processor, resize=True),
        "naive, processor resizes": lambda: naive(data_url, processor, resize=False),
        "moesaic, no target size": lambda: moesaic(data_url, processor, None),
        f"moesaic, target {side} (draft)": lambda: moesaic(data_url, processor, side),
        "  same, stdlib base64 (proposed)": lambda: moesaic_fast_base64(data_url, processor, side),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    shapes: dict[str, tuple[int, ...]] = {}
    reference = None
    for _ in range(repeats + 1):  # the first round warms caches and is dropped
        for name, fn in paths.items():
            ms, pixels = timed(fn)
            times[name].append(ms)
            shapes[name] = tuple(pixels.shape)
            if reference is None:
                reference = pixels
            elif pixels.shape != reference.shape:
                raise RuntimeError(f"{name} gave pixels {tuple(pixels.shape)}, not {tuple(reference.shape)}")
    base = statistics.median(times["naive (full decode + PIL resize)"][1:])
    rows = []
    for name, values in times.items():
        median = statistics.median(values[1:])
        rows.append({"setting": f"{'split 2048' if split else 'one 512 tile'}", "path": name, "ms": median,
                     "min ms": min(values[1:]), "shape": shapes[name], "speed-up": base / median})
    return rows


def breakdown(data_url: str, repeats: int) -> dict[str, float]:
    """Median ms of each stage of moesaic's one-tile path, and of the stdlib base64 decode for comparison."""
    from moesaic.inputs import ImagePolicy
    from moesaic.inputs.decode import decode_image
    from moesaic.inputs.images import load_image_bytes

    processor = image_processor(False)
    policy = ImagePolicy.for_server(target_size=model_side(processor))
    raw = load_image_bytes(data_url, policy)
    image = decode_image(raw, policy)
    stages: dict[str, Callable[[], Any]] = {
        "base64 text -> bytes (moesaic load_image_bytes)": lambda: load_image_bytes(data_url, policy),
        "base64 text -> bytes (stdlib b64decode)": lambda: base64.b64decode(data_url.partition(",")[2]),
        "JPEG bytes -> RGB, full decode (PIL)": lambda: Image.open(io.BytesIO(raw)).convert("RGB"),
        f"JPEG bytes -> RGB, draft to {image.size} (moesaic decode_image)": lambda: decode_image(raw, policy),
        "processor on the draft-decoded image": lambda: processor(images=[[image]], return_tensors="pt"),
    }
    return {name: statistics.median(timed(fn)[0] for _ in range(repeats)) for name, fn in stages.items()}


def decoded_size(data_url: str, side: int) -> tuple[int, int]:
    from moesaic.inputs import ImagePolicy, load_image

    return load_image(data_url, ImagePolicy.for_server(target_size=side)).size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()

    import torch

    jpeg = synthetic_jpeg(quality=args.quality)
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    print(f"JPEG {WIDTH}x{HEIGHT}, quality {args.quality}: {len(jpeg) / 1e6:.2f} MB, base64 "
          f"{len(data_url) / 1e6:.2f} MB; torch threads={torch.get_num_threads()}; median of {args.repeats} rounds")
    for side in (512, 2048):
        print(f"  target {side}: moesaic decodes at {decoded_size(data_url, side)}")
    for name, ms in breakdown(data_url, args.repeats).items():
        print(f"  stage: {name:<62}{ms:8.1f} ms")
    rows = run(data_url, False, args.repeats) + run(data_url, True, args.repeats)
    print(f"{'processor':<14}{'path':<36}{'ms':>9}{'min ms':>9}  {'pixel_values':<22}{'vs naive':>9}")
    for r in rows:
        print(f"{r['setting']:<14}{r['path']:<36}{r['ms']:>9.1f}{r['min ms']:>9.1f}  {str(r['shape']):<22}"
              f"{r['speed-up']:>8.2f}x")


if __name__ == "__main__":
    main()
