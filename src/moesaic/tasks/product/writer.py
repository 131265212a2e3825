"""Stage 2: a writer turns attributes into shop copy through the hidden, versioned prompt template.

Writers, chosen by a spec string:

- ``smollm2`` (default) or ``hf:<hub id or folder>`` — a causal LM through :class:`moesaic.experts.llm.CausalLMWriter`
- ``vlm`` — the stage-1 VLM backend itself (text-only turn); ``vlm:<model>`` loads another backend
- ``openai:<model>`` — any OpenAI-compatible endpoint (``--endpoint`` base URL, key from ``OPENAI_API_KEY``)
- ``template`` — no model: a fixed sentence built from the attributes (always grounded)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from moesaic.errors import ConfigError, missing_extra
from moesaic.tasks.findings import article, join_words
from moesaic.tasks.product.schema import ProductAttributes

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.backends.base import Backend

__all__ = ["PromptTemplate", "load_template", "write_description", "template_sentence", "render_messages"]


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str


@lru_cache(maxsize=4)
def load_template(name: str = "description") -> PromptTemplate:
    """Parse ``templates/<name>.txt``: ``# version:`` header, then ``SYSTEM:`` and ``USER:`` sections."""
    text = resources.files("moesaic.tasks.product").joinpath(f"templates/{name}.txt").read_text(encoding="utf-8")
    version, section, parts = "", None, {"SYSTEM": [], "USER": []}  # type: ignore[var-annotated]
    for line in text.splitlines():
        if line.startswith("#"):
            if line.lstrip("# ").startswith("version:"):
                version = line.split("version:", 1)[1].strip()
            continue
        if line.rstrip() in ("SYSTEM:", "USER:"):
            section = line.rstrip()[:-1]
            continue
        if section:
            parts[section].append(line)
    if not version or not parts["USER"]:
        raise ConfigError(f"prompt template {name!r} lacks a version or a USER section", "reinstall moesaic")
    return PromptTemplate(version, "\n".join(parts["SYSTEM"]).strip(), "\n".join(parts["USER"]).strip())


def _facts(attrs: ProductAttributes) -> str:
    rows = [f"- type: {attrs.item_type} ({attrs.category})", f"- colours: {', '.join(attrs.colours)}"]
    if attrs.material:
        rows.append(f"- material: {attrs.material}")
    if attrs.visible_text:
        rows.append(f'- printed text: "{attrs.visible_text}"')
    return "\n".join(rows)


def render_messages(attrs: ProductAttributes, template: PromptTemplate) -> list[dict[str, str]]:
    user = template.user.format(facts=_facts(attrs), colour=attrs.colours[0], item_type=attrs.item_type)
    return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]


def template_sentence(attrs: ProductAttributes) -> str:
    """The model-free writer: every word comes from the attributes."""
    lead = f"{attrs.colours[0]} {attrs.item_type}"
    text = f"{article(lead).capitalize()} {lead}"
    if attrs.material:
        text += f" made of {attrs.material}"
    if len(attrs.colours) > 1:
        text += f" with {join_words(attrs.colours[1:])} details"
    text += "."
    if attrs.visible_text:
        text += f' It carries the print "{attrs.visible_text}".'
    return text


def write_description(
    attrs: ProductAttributes,
    writer: str,
    *,
    backend: "Backend | None" = None,
    endpoint: str | None = None,
    max_new_tokens: int = 96,
    template: PromptTemplate | None = None,
) -> str:
    """Run the writer named by ``writer`` on the rendered template."""
    template = template or load_template()
    messages = render_messages(attrs, template)
    kind, _, target = writer.partition(":")
    if kind == "template":
        return template_sentence(attrs)
    if kind in ("smollm2", "hf"):
        from moesaic.experts.llm import CausalLMWriter

        model = target or "smollm2"
        text = CausalLMWriter.shared(model).complete(messages, max_new_tokens=max_new_tokens)
        return _first_paragraph(text)
    if kind == "vlm":
        return _first_paragraph(_vlm_write(messages, backend, target, max_new_tokens))
    if kind == "openai":
        return _first_paragraph(_openai_write(messages, target, endpoint, max_new_tokens))
    raise ConfigError(f"unknown writer {writer!r}",
                      "use smollm2, hf:<model>, vlm, vlm:<model>, openai:<model> (with --endpoint) or template",
                      param="writer")


def _first_paragraph(text: str) -> str:
    text = text.strip()
    return text.split("\n\n", 1)[0].strip()


def _vlm_write(messages: list[dict[str, str]], backend: "Backend | None", model: str, max_new_tokens: int) -> str:
    from moesaic.backends.base import GenerationParams
    from moesaic.inputs.messages import Turn

    if model:
        from moesaic.backends.registry import load_backend

        backend = load_backend(model)
    if backend is None:
        raise ConfigError("writer 'vlm' needs a VLM: pass --model <vlm> or --writer vlm:<model>",
                          "or use --writer smollm2", param="writer")
    turns = [Turn(role=m["role"], parts=(m["content"],)) for m in messages]  # type: ignore[arg-type]
    return backend.generate(turns, GenerationParams(max_new_tokens=max_new_tokens)).text


def _openai_write(messages: list[dict[str, str]], model: str, endpoint: str | None, max_new_tokens: int) -> str:
    if not model or not endpoint:
        raise ConfigError("writer openai:<model> needs a model name and --endpoint",
                          "e.g. --writer openai:gpt-4o-mini --endpoint https://api.openai.com/v1", param="endpoint")
    try:
        import openai
    except ImportError:
        raise missing_extra("openai", "dev") from None
    client = openai.OpenAI(base_url=endpoint, api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
                           max_retries=0, timeout=120)
    try:
        reply = client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                               max_tokens=max_new_tokens, temperature=0)
    except openai.OpenAIError as exc:
        from moesaic.errors import FetchError

        raise FetchError(f"the writer endpoint {endpoint} failed: {exc}", "check --endpoint and OPENAI_API_KEY") from None
    return reply.choices[0].message.content or ""
