"""Which starter writer should be the default: the grounded template or SmolLM2 rewriting its facts?

On 8 images (skimage photos and two rendered signs) with the generic question, each writer's answer is
checked by :func:`moesaic.experts.factcheck.check_answer`: *recall* = share of the experts' facts (best
tag, colour names, text lines) the answer states; *invented* = things it names that no expert found
(ImageNet classes, palette colours, numbers). SmolLM2 runs with three decoding settings.

Run:  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/starter_writer.py
Measured 2026-11-23 on 2 shared CPU cores (load average ~6), SmolLM2-135M-Instruct Q4_1:

    writer         mean recall invented/img  s/answer
    template              1.00         0.00      0.00
    llm greedy            0.59         0.12      5.64
    llm rp1.1             0.30         0.88      6.28
    llm rp1.2+ng3         0.03         1.75     11.93

The template is the default writer. Greedy is the LLM's default decoding: repetition penalties also
penalise the prompt's tokens, so they stop the model from copying the facts and push it to invent.
The one invention under greedy: "a product of a bakery" for a sign reading FRESH BREAD.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from moesaic.experts.backend import run_experts
from moesaic.experts.factcheck import check_answer
from moesaic.experts.llm import CausalLMWriter
from moesaic.experts.router import Router
from moesaic.experts.writer import grounded_answer, llm_answer

SEED = 0
QUESTION = "What is in this image?"
SETTINGS: dict[str, dict[str, Any]] = {
    "llm greedy": {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0},
    "llm rp1.1": {"repetition_penalty": 1.1, "no_repeat_ngram_size": 0},
    "llm rp1.2+ng3": {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3},
}


def sign(lines: list[str]) -> Image.Image:
    import matplotlib

    font = ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), 28)
    img = Image.new("RGB", (420, 50 + 45 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((14, 14 + 45 * i), text, fill="black", font=font)
    return img


def images() -> dict[str, Image.Image]:
    from skimage import data

    photos = {name: Image.fromarray(getattr(data, name)()) for name in ("coffee", "chelsea", "astronaut", "rocket")}
    photos["camera"] = Image.fromarray(data.camera()).convert("RGB")
    photos["red square"] = Image.new("RGB", (64, 64), (200, 20, 20))
    photos["sign"] = sign(["FRESH BREAD"])
    photos["notice"] = sign(["CLOSED ON MONDAY", "Open 9 to 5"])
    return photos


def main() -> None:
    torch.manual_seed(SEED)
    router = Router()
    route = router.route(QUESTION)
    llm = CausalLMWriter.shared("smollm2")
    totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in ("template", *SETTINGS)}
    print(f"{'image':<11} {'writer':<14} {'recall':>6} {'invented':>8} {'s':>5}  answer")
    for name, img in images().items():
        findings = [run_experts(img, route.experts)]
        answers: dict[str, tuple[str, float]] = {}
        started = time.perf_counter()
        answers["template"] = (grounded_answer(QUESTION, route, findings), time.perf_counter() - started)
        for label, decoding in SETTINGS.items():
            started = time.perf_counter()
            answers[label] = (llm_answer(QUESTION, route, findings, llm, **decoding), time.perf_counter() - started)
        for label, (text, seconds) in answers.items():
            check = check_answer(text, findings, QUESTION)
            totals[label][0] += check.recall
            totals[label][1] += len(check.invented)
            totals[label][2] += seconds
            shown = text.replace("\n", " ")[:90]
            print(f"{name:<11} {label:<14} {check.recall:>6.2f} {len(check.invented):>8} {seconds:>5.2f}  {shown}"
                  + (f"  invented={check.invented}" if check.invented else ""))
    n = len(images())
    print(f"\n{'writer':<14} {'mean recall':>11} {'invented/img':>12} {'s/answer':>9}")
    for label, (recall, invented, seconds) in totals.items():
        print(f"{label:<14} {recall / n:>11.2f} {invented / n:>12.2f} {seconds / n:>9.2f}")


if __name__ == "__main__":
    main()
