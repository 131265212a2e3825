"""The vision-token budget: count every sample's tokens with the model's own processor, shrink images
that exceed the budget, and report the distribution (min / median / p95 / max) before and after.

Why: image resolution drives the number of vision tokens, the usual cause of out-of-memory in VLM
fine-tuning. ``max_pixels`` caps each image's area; ``max_image_tokens`` caps a sample's image tokens by
downscaling its images (aspect kept) until the processor counts few enough; ``max_length`` caps the whole
sample, which is dropped or rejected (``too_long``) — never truncated, so image tokens are never cut.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from moesaic.errors import MoesaicError
from moesaic.finetune.config import BudgetSettings
from moesaic.finetune.data import DataError, Sample
from moesaic.finetune.encode import Encoded, encode_sample
from moesaic.progress import progress

__all__ = ["Stats", "Resized", "BudgetReport", "prepare", "load_sample_image", "stats"]

_SHRINK = 0.9  # each retry shrinks at least this much


class Stats(BaseModel):
    min: float
    median: float
    p95: float
    max: float


class Resized(BaseModel):
    row: int
    sizes_before: list[tuple[int, int]]
    sizes_after: list[tuple[int, int]]
    image_tokens_before: int
    image_tokens_after: int


class BudgetReport(BaseModel):
    samples: int
    image_tokens_before: Stats | None = None
    image_tokens: Stats | None = None
    text_tokens: Stats | None = None
    total_tokens: Stats | None = None
    resized: list[Resized] = Field(default_factory=list)
    dropped_rows: list[int] = Field(default_factory=list)

    def render(self) -> str:
        def line(name: str, s: Stats | None) -> str:
            return f"  {name:<20} min {s.min:g}  median {s.median:g}  p95 {s.p95:g}  max {s.max:g}" if s else ""
        lines = [f"{self.samples} samples", line("image tokens before", self.image_tokens_before),
                 line("image tokens", self.image_tokens), line("text tokens", self.text_tokens),
                 line("total tokens", self.total_tokens),
                 f"  resized {len(self.resized)} sample(s): rows {[r.row for r in self.resized]}",
                 f"  dropped {len(self.dropped_rows)} sample(s): rows {self.dropped_rows}"]
        return "\n".join(x for x in lines if x)


def stats(values: list[int]) -> Stats | None:
    if not values:
        return None
    v = sorted(values)

    def q(p: float) -> float:  # linear-interpolated quantile
        pos = (len(v) - 1) * p
        lo, hi = math.floor(pos), math.ceil(pos)
        return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))
    return Stats(min=v[0], median=q(0.5), p95=q(0.95), max=v[-1])


def load_sample_image(ref: str) -> Any:
    """Decode one image reference (path, URL, data URL, base64) as RGB with the shared loader."""
    from moesaic.inputs.images import ImagePolicy, load_image

    return load_image(ref, ImagePolicy.for_cli()).convert("RGB")


def _cap_pixels(img: Any, max_pixels: int | None, min_side: int) -> Any:
    w, h = img.size
    if max_pixels is None or w * h <= max_pixels:
        return img
    scale = math.sqrt(max_pixels / (w * h))
    return img.resize((max(min_side, int(w * scale)), max(min_side, int(h * scale))))


def _smallest(img: Any, min_side: int) -> Any:
    scale = min(1.0, min_side / min(img.size))
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))


def _fit_tokens(processor: Any, sample: Sample, enc: Encoded, budget: int, min_side: int,
                image_token: int) -> Encoded:
    if enc.n_image_tokens <= budget:
        return enc
    current = sample.pil
    sample.pil = [_smallest(img, min_side) for img in current]  # probe: can any size fit? (fixed-token processors)
    floor = encode_sample(processor, sample, image_token).n_image_tokens
    sample.pil = current
    if floor > budget:
        raise DataError(f"row {sample.row}: {enc.n_image_tokens} image tokens, still {floor} at the smallest size "
                        f"(budget.max_image_tokens={budget}; this processor may use a fixed count per image)",
                        "raise budget.max_image_tokens, lower budget.min_side, or use fewer images per sample")
    while enc.n_image_tokens > budget:
        scale = min(_SHRINK, math.sqrt(budget / enc.n_image_tokens))
        before = [img.size for img in sample.pil]
        sample.pil = [img.resize((max(min_side, int(img.width * scale)), max(min_side, int(img.height * scale))))
                      for img in sample.pil]
        if [img.size for img in sample.pil] == before:
            raise DataError(f"row {sample.row}: cannot shrink its images below {min_side}px to fit "
                            f"budget.max_image_tokens={budget}", "raise the budget or lower budget.min_side")
        enc = encode_sample(processor, sample, image_token)
    return enc


def prepare(processor: Any, samples: list[Sample], budget: BudgetSettings,
            image_token: int) -> tuple[list[tuple[Sample, Encoded]], BudgetReport]:
    """Decode images, apply the budget, encode; return the kept samples and the report."""
    kept: list[tuple[Sample, Encoded]] = []
    resized: list[Resized] = []
    dropped: list[int] = []
    before: list[int] = []
    for sample in progress(samples, desc="counting tokens", unit="sample"):
        try:
            originals = [load_sample_image(ref) for ref in sample.images]
        except MoesaicError as exc:
            raise DataError(f"row {sample.row}: {exc.message}", exc.hint) from None
        sample.pil = originals
        first = encode_sample(processor, sample, image_token)
        before.append(first.n_image_tokens)
        sample.pil = [_cap_pixels(img, budget.max_pixels, budget.min_side) for img in originals]
        enc = first if all(a is b for a, b in zip(sample.pil, originals)) else \
            encode_sample(processor, sample, image_token)
        if budget.max_image_tokens is not None:
            enc = _fit_tokens(processor, sample, enc, budget.max_image_tokens, budget.min_side, image_token)
        if any(a is not b for a, b in zip(sample.pil, originals)):
            resized.append(Resized(row=sample.row, sizes_before=[i.size for i in originals],
                                   sizes_after=[i.size for i in sample.pil],
                                   image_tokens_before=first.n_image_tokens, image_tokens_after=enc.n_image_tokens))
        if budget.max_length is not None and enc.n_tokens > budget.max_length:
            if budget.too_long == "error":
                raise DataError(f"row {sample.row}: {enc.n_tokens} tokens > budget.max_length={budget.max_length}",
                                "raise max_length, lower max_image_tokens, or set budget.too_long: drop")
            dropped.append(sample.row)
            continue
        kept.append((sample, enc))
    report = BudgetReport(
        samples=len(kept), image_tokens_before=stats(before),
        image_tokens=stats([e.n_image_tokens for _, e in kept]),
        text_tokens=stats([e.n_tokens - e.n_image_tokens for _, e in kept]),
        total_tokens=stats([e.n_tokens for _, e in kept]), resized=resized, dropped_rows=dropped)
    return kept, report
