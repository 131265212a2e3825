"""``moesaic tag IMAGE [--top-k 5] [--threshold 0.05]``: labels with scores.

Starter: ImageNet probabilities from the tagger (``scored_by="probability"``). VLM backend: the model lists
labels; their scores are rank-based (1, 1-1/k, …) because a generated list carries no probabilities
(``scored_by="rank"``), and the threshold applies to those.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from moesaic.tasks.base import Task, TaskConfig, TaskResult, is_starter, prompt_backend, run_task

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["TagConfig", "TagResult", "TagScore", "TagTask", "tag", "parse_tag_list"]


class TagConfig(TaskConfig):
    top_k: int = Field(5, ge=1, le=100, description="at most this many tags")
    threshold: float = Field(0.0, ge=0.0, le=1.0, description="drop tags scoring below this")


class TagScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    score: float


class TagResult(TaskResult):
    tags: list[TagScore] = Field(default_factory=list)
    scored_by: Literal["probability", "rank"] = "probability"

    def render(self) -> str:
        if not self.tags:
            return "(no tag above the threshold)"
        return "\n".join(f"{t.score:6.3f}  {t.label}" for t in self.tags)


def parse_tag_list(text: str, top_k: int) -> list[str]:
    """"1. cat, 2) Dog\n- tree." → ["cat", "dog", "tree"] (deduplicated, lower-case, at most top_k)."""
    out: list[str] = []
    for piece in re.split(r"[,;\n]", text):
        label = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", piece).strip(" .\t\"'").lower()
        if label and len(label) <= 60 and label not in out:
            out.append(label)
    return out[:top_k]


class TagTask(Task):
    name: ClassVar[str] = "tag"
    config_cls: ClassVar[type[TaskConfig]] = TagConfig

    def run(self, image: "Image.Image", backend: "Backend | None") -> TagResult:
        cfg = self.config
        assert isinstance(cfg, TagConfig)
        if is_starter(backend):
            from moesaic.experts.tagger import Tagger

            scored = [(t.label, float(t.score)) for t in Tagger.shared().tag(image, top_k=cfg.top_k)]
            scored_by: Literal["probability", "rank"] = "probability"
            experts = ["tagger"]
        else:
            assert backend is not None
            prompt = (f"List up to {cfg.top_k} short tags for the objects and qualities in this image, "
                      "most important first, separated by commas. Answer with the tags only.")
            answer = prompt_backend(backend, [image], prompt, cfg.max_new_tokens)
            labels = parse_tag_list(answer.text, cfg.top_k)
            scored = [(label, round(1.0 - i / cfg.top_k, 4)) for i, label in enumerate(labels)]
            scored_by, experts = "rank", list(answer.experts)
        tags = [TagScore(label=label, score=score) for label, score in scored if score >= cfg.threshold]
        text = ", ".join(t.label for t in tags)
        return TagResult(task=self.name, image=cfg.image, model=cfg.model, text=text, experts=experts,
                         tags=tags, scored_by=scored_by)


def tag(config: TagConfig) -> TagResult:
    """Tags with scores for an image (--top-k, --threshold)."""
    result = run_task(TagTask, config)
    assert isinstance(result, TagResult)
    return result
