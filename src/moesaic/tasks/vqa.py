"""``moesaic vqa IMAGE "QUESTION"``: answer a question about an image.

Any backend answers, the starter experts included (their router picks tagger, colours or OCR for the
question); the result records which experts answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from moesaic.errors import InputError
from moesaic.tasks.base import Task, TaskConfig, TaskResult, prompt_backend, run_task

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["VQAConfig", "VQAResult", "VQATask", "vqa"]


class VQAConfig(TaskConfig):
    positional: ClassVar[tuple[str, ...]] = ("image", "question")

    question: str = Field(min_length=1, description="the question about the image")


class VQAResult(TaskResult):
    question: str


class VQATask(Task):
    name: ClassVar[str] = "vqa"
    config_cls: ClassVar[type[TaskConfig]] = VQAConfig
    starter_needs_backend: ClassVar[bool] = True

    def run(self, image: "Image.Image", backend: "Backend | None") -> VQAResult:
        cfg = self.config
        assert isinstance(cfg, VQAConfig)
        if not cfg.question.strip():
            raise InputError("the question is empty", "ask something about the image")
        if backend is None:
            from moesaic.backends.registry import load_backend

            backend = load_backend("starter")
        answer = prompt_backend(backend, [image], cfg.question, cfg.max_new_tokens)
        return VQAResult(task=self.name, image=cfg.image, model=cfg.model, text=answer.text.strip(),
                         experts=list(answer.experts), question=cfg.question)


def vqa(config: VQAConfig) -> VQAResult:
    """Answer a question about an image."""
    result = run_task(VQATask, config)
    assert isinstance(result, VQAResult)
    return result
