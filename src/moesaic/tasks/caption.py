"""``moesaic caption IMAGE [--detail brief|detailed]``: describe an image.

On the starter experts the caption is composed from what the tagger, the colour namer and OCR found (so
every word is grounded); on a VLM backend the model is prompted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from moesaic.tasks.base import Task, TaskConfig, TaskResult, is_starter, prompt_backend, run_task
from moesaic.tasks.findings import Findings, article, join_words, look

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["CaptionConfig", "CaptionResult", "CaptionTask", "caption", "compose_caption"]

PROMPTS = {
    "brief": "Describe this image in one short sentence.",
    "detailed": "Describe this image in detail: the main subject, its colours, the setting and any text.",
}
UNSURE = 0.3  # below this tag probability the caption hedges


class CaptionConfig(TaskConfig):
    detail: Literal["brief", "detailed"] = Field("brief", description="one sentence or a detailed paragraph")


class CaptionResult(TaskResult):
    detail: Literal["brief", "detailed"] = "brief"


def compose_caption(found: Findings, detail: Literal["brief", "detailed"]) -> str:
    """A caption from the experts' findings, hedged when the tagger is unsure."""
    if not found.tags:
        subject = "an image"
    else:
        label, score = found.tags[0]
        subject = f"{article(label)} {label}"
        if score < UNSURE:
            subject = f"possibly {subject}"
    colours = [name for name, _ in found.colours[:2]]
    sentence = f"A photo of {subject}" + (f", mostly {join_words(colours)}" if colours else "") + "."
    if found.text:
        quoted = " ".join(found.text)[:120]
        sentence += f' It reads "{quoted}".'
    if detail == "brief":
        return sentence
    extra = []
    if len(found.tags) > 1:
        alts = [f"{label} ({score:.0%})" for label, score in found.tags[1:4]]
        extra.append(f"Other likely subjects: {join_words(alts, 'or')}.")
    if found.colours:
        shares = [f"{name} {share:.0%}" for name, share in found.colours]
        extra.append(f"Colours by area: {', '.join(shares)}.")
    if len(found.text) > 1:
        extra.append(f"{len(found.text)} lines of text were read.")
    return " ".join([sentence, *extra])


class CaptionTask(Task):
    name: ClassVar[str] = "caption"
    config_cls: ClassVar[type[TaskConfig]] = CaptionConfig

    def run(self, image: "Image.Image", backend: "Backend | None") -> CaptionResult:
        cfg = self.config
        assert isinstance(cfg, CaptionConfig)
        if is_starter(backend):
            found = look(image, top_k=5, ocr=True)
            text, experts = compose_caption(found, cfg.detail), found.experts
        else:
            assert backend is not None
            answer = prompt_backend(backend, [image], PROMPTS[cfg.detail], cfg.max_new_tokens)
            text, experts = answer.text.strip(), list(answer.experts)
        return CaptionResult(task=self.name, image=cfg.image, model=cfg.model, text=text, experts=experts,
                             detail=cfg.detail)


def caption(config: CaptionConfig) -> CaptionResult:
    """Describe an image in one sentence (--detail brief) or a paragraph (--detail detailed)."""
    result = run_task(CaptionTask, config)
    assert isinstance(result, CaptionResult)
    return result
