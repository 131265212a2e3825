"""A scripted backend for tests of prompt plumbing: answers from a queue, records what it was asked."""

from __future__ import annotations

from moesaic.backends.base import Answer, Backend, GenerationParams
from moesaic.inputs.messages import Turn

__all__ = ["ScriptedBackend"]


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[list[Turn]] = []

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        self.prompts.append(prompt)
        return Answer(text=self.answers.pop(0), model=self.name)
