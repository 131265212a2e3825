"""``moesaic fewshot IMAGE "QUESTION" --examples examples.jsonl``: answer with worked examples in the prompt.

The conversation interleaves text and images: per example a user turn (its images, then its question)
and an assistant turn (its answer), then the query turn. Backends render turns with their own chat
template; :func:`chat_inputs` does it for a transformers processor and checks that the rendered prompt
holds exactly one image placeholder per image (a mismatch is the classic silent few-shot bug).

The starter experts cannot learn from examples (they would read every example image as part of the
question), so on them only the query turn is sent and the result says ``examples_used: false``.

Examples file: JSONL or YAML list of ``{"images": [...] | "image": "...", "question": "...", "answer": "..."}``;
relative image paths are resolved against the file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moesaic.config import CommandConfig
from moesaic.errors import InputError
from moesaic.tasks.base import STARTER, is_starter, open_backend, open_image

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend
    from moesaic.inputs.messages import Turn

__all__ = ["Example", "FewShotConfig", "FewShotResult", "fewshot", "build_turns", "hf_messages", "chat_inputs",
           "load_examples", "run_fewshot"]


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    images: list[str] = Field(default_factory=list)
    question: str | None = None
    answer: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _single_image(cls, data: Any) -> Any:
        if isinstance(data, dict) and "image" in data:
            data = dict(data)
            image = data.pop("image")
            data["images"] = [image, *data.get("images", [])]
        return data


class FewShotConfig(CommandConfig):
    positional: ClassVar[tuple[str, ...]] = ("image", "question")

    image: str = Field(description="the query image (comma-separate several)")
    question: str = Field(min_length=1, description="the question for the query image")
    examples: str | list[Example] = Field(description="a JSONL/YAML file of examples, or the examples inline")
    instruction: str | None = Field(None, description="a system instruction placed first")
    model: str = Field(STARTER, description="'starter', a hub id or a local VLM folder")
    backend: str | None = None
    max_new_tokens: int = Field(128, ge=1, le=4096)


class FewShotResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    model: str
    examples: int
    images: int
    experts: list[str] = Field(default_factory=list)
    examples_used: bool = Field(True, description="False on the starter experts, which answer the query alone")

    def render(self) -> str:
        return self.text if self.examples_used else f"{self.text}\n(the starter experts answer without the examples)"


def load_examples(source: str | list[Example]) -> list[Example]:
    if not isinstance(source, str):
        return list(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"examples file {path} does not exist", "pass a .jsonl or .yaml file of examples")
    text = path.read_text(encoding="utf-8")
    raw = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
        else yaml.safe_load(text)
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path} holds no examples", "write a list of {images, question, answer}")
    try:
        examples = [Example.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise InputError(f"{path}: bad example ({exc.errors()[0]['msg']})", "each needs images and an answer") from None
    base = path.parent
    return [e.model_copy(update={"images": [_resolve(r, base) for r in e.images]}) for e in examples]


def _resolve(ref: str, base: Path) -> str:
    if ref.startswith(("http://", "https://", "data:")) or Path(ref).is_absolute():
        return ref
    return str(base / ref)


def build_turns(
    examples: list[tuple[list["Image.Image"], str | None, str]],
    query_images: list["Image.Image"],
    question: str,
    instruction: str | None = None,
) -> list["Turn"]:
    """Interleaved conversation: [system], (user: images + question, assistant: answer)*, user: query."""
    from moesaic.inputs.messages import Turn

    turns = [Turn(role="system", parts=(instruction,))] if instruction else []
    for images, ex_question, answer in examples:
        turns.append(Turn(role="user", parts=(*images, ex_question or question)))
        turns.append(Turn(role="assistant", parts=(answer,)))
    turns.append(Turn(role="user", parts=(*query_images, question)))
    return turns


def hf_messages(turns: list["Turn"]) -> list[dict[str, Any]]:
    """Turns → transformers chat messages with ``{"type": "image"}`` / ``{"type": "text"}`` parts, in order."""
    out = []
    for turn in turns:
        parts = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image", "image": p}
                 for p in turn.parts]
        out.append({"role": turn.role, "content": parts})
    return out


def chat_inputs(processor: Any, turns: list["Turn"]) -> dict[str, Any]:
    """Render and tokenize ``turns`` with ``processor``'s chat template; checks one placeholder per image."""
    messages = hf_messages(turns)
    images = [p for t in turns for p in t.parts if not isinstance(p, str)]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    token = getattr(processor, "image_token", None)
    if token and text.count(token) != len(images):
        raise InputError(
            f"the chat template placed {text.count(token)} image placeholders for {len(images)} images",
            "use a processor whose chat template renders every image part",
        )
    return processor(text=[text], images=images or None, return_tensors="pt")


def fewshot(config: FewShotConfig) -> FewShotResult:
    """Answer a question about an image, guided by examples (images and their answers)."""
    from moesaic.backends.registry import load_backend

    return run_fewshot(config, open_backend(config.model, config.backend) or load_backend(STARTER))


def run_fewshot(config: FewShotConfig, backend: "Backend") -> FewShotResult:
    """:func:`fewshot` with a backend already loaded."""
    from moesaic.backends.base import GenerationParams

    examples = load_examples(config.examples)
    if not examples:
        raise InputError("no examples given", "pass --examples FILE with at least one example")
    shots = [([open_image(r) for r in e.images], e.question, e.answer) for e in examples]
    query = [open_image(r.strip()) for r in config.image.split(",") if r.strip()]
    turns = build_turns(shots, query, config.question, config.instruction)
    used = not is_starter(backend)
    if not used:  # the starter experts read every image they are given; they cannot learn from examples
        turns = turns[-1:]
    answer = backend.generate(turns, GenerationParams(max_new_tokens=config.max_new_tokens))
    n_images = sum(len(s[0]) for s in shots) + len(query)
    return FewShotResult(text=answer.text.strip(), model=config.model, examples=len(examples), images=n_images,
                         experts=list(answer.experts), examples_used=used)
