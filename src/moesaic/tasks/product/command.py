"""``moesaic describe-product IMAGE``: attributes as schema-valid JSON, then shop copy written from them.

Stage 1 (attributes): the starter experts (tags → type, product pixels → colours, OCR → text), or a VLM
prompted for JSON, parsed, repaired and validated (one retry that shows the model its schema error).
Stage 2 (description): a writer (see :mod:`moesaic.tasks.product.writer`) fed through the hidden prompt
template, whose version is recorded. The text is checked against the attributes: invented colours,
materials or product types are reported as violations; with ``--on-violation fallback`` (default) the
draft is replaced by the model-free template sentence, and the draft is kept in the result.
"""

from __future__ import annotations

import logging
import re

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from moesaic.tasks.base import Task, TaskConfig, TaskResult, is_starter, prompt_backend, run_task
from moesaic.tasks.product.grounding import Violation, find_violations
from moesaic.tasks.product.schema import ATTRIBUTE_PROMPT, ProductAttributes, SchemaMismatchError, parse_attributes
from moesaic.tasks.product.starter import attributes_from_experts
from moesaic.tasks.product.writer import load_template, template_sentence, write_description

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from moesaic.backends.base import Backend

__all__ = ["DescribeProductConfig", "ProductResult", "ProductTask", "describe_product", "vlm_attributes"]

log = logging.getLogger(__name__)


class DescribeProductConfig(TaskConfig):
    writer: str = Field("smollm2", description="smollm2 | hf:<model> | vlm | vlm:<model> | openai:<model> | template")
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible API (writer openai:<model>)")
    ocr: bool = Field(True, description="read printed text with OCR (starter experts)")
    on_violation: Literal["report", "fallback"] = Field(
        "fallback", description="when the writer invents attributes: only report, or also use the grounded sentence"
    )


class ProductResult(TaskResult):
    attributes: ProductAttributes
    description: str
    template_version: str
    writer: str
    violations: list[Violation] = Field(default_factory=list, description="invented words in the writer's draft")
    missing: list[str] = Field(default_factory=list, description="main attributes the draft did not mention")
    draft: str | None = Field(None, description="the writer's text when it was replaced by the fallback")
    fallback_used: bool = False

    def render(self) -> str:
        lines = [self.description, "", self.attributes.model_dump_json(indent=2)]
        if self.violations:
            lines.append("violations: " + ", ".join(f"{v.word} ({v.kind})" for v in self.violations))
        lines.append(f"template {self.template_version}, writer {self.writer}")
        return "\n".join(lines)


def vlm_attributes(backend: "Backend", image: "Image.Image", max_new_tokens: int) -> ProductAttributes:
    """Prompt a VLM for the JSON attributes; on a schema error retry once, showing it the error."""
    answer = prompt_backend(backend, [image], ATTRIBUTE_PROMPT, max_new_tokens)
    try:
        return parse_attributes(answer.text)
    except SchemaMismatchError as first:
        log.info("attribute JSON rejected (%s); asking once more", first.message)
        repair = f"{ATTRIBUTE_PROMPT}\nYour previous answer was invalid: {first.message}. Answer with valid JSON only."
        retry = prompt_backend(backend, [image], repair, max_new_tokens)
        return parse_attributes(retry.text)


def _missing(text: str, attrs: ProductAttributes) -> list[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    out = [] if set(attrs.colours[0].split()) <= words else [attrs.colours[0]]
    if not set(re.findall(r"[a-z]+", attrs.item_type)) & words:
        out.append(attrs.item_type)
    return out


class ProductTask(Task):
    name: ClassVar[str] = "product"
    config_cls: ClassVar[type[TaskConfig]] = DescribeProductConfig

    def run(self, image: "Image.Image", backend: "Backend | None") -> ProductResult:
        cfg = self.config
        assert isinstance(cfg, DescribeProductConfig)
        if is_starter(backend):
            attrs = attributes_from_experts(image, ocr=cfg.ocr)
            experts = ["tagger", "colors", "ocr"] if cfg.ocr else ["tagger", "colors"]
        else:
            assert backend is not None
            attrs, experts = vlm_attributes(backend, image, cfg.max_new_tokens), []
        template = load_template()
        draft = write_description(attrs, cfg.writer, backend=backend, endpoint=cfg.endpoint, template=template)
        violations, missing = find_violations(draft, attrs), _missing(draft, attrs)
        text, fallback = draft, False
        if cfg.on_violation == "fallback" and (violations or missing or not draft):
            text, fallback = template_sentence(attrs), True
        return ProductResult(
            task=self.name, image=cfg.image, model=cfg.model, text=text, experts=experts, attributes=attrs,
            description=text, template_version=template.version, writer=cfg.writer, violations=violations,
            missing=missing, draft=draft if fallback else None, fallback_used=fallback,
        )


def describe_product(config: DescribeProductConfig) -> ProductResult:
    """Product attributes (schema-valid JSON) and a grounded shop description written from them."""
    result = run_task(ProductTask, config)
    assert isinstance(result, ProductResult)
    return result



