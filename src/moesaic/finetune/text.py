"""Text-only causal LMs in the fine-tuning pipeline: a tokenizer dressed as a processor.

The pipeline (encode, collate, evaluate, export) talks to a VLM processor: ``apply_chat_template`` over
messages whose content is a list of parts, ``processor(text=..., images=...)`` and ``processor.tokenizer``.
A causal LM has only a tokenizer, and its chat template usually wants plain-string content (SmolLM2,
Llama, Qwen2). :class:`TextProcessor` gives the pipeline that interface: text parts are joined into one
string per turn, an image part is refused with the fix, and the chat template renders every special
token itself (so tokenisation never adds BOS/EOS on top).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesaic.errors import ConfigError
from moesaic.finetune.data import DataError

__all__ = ["TextProcessor", "NO_IMAGE_TOKEN", "is_text_only"]

NO_IMAGE_TOKEN = -1  # a text-only model has no image token; no input id ever equals this


def is_text_only(config: Any) -> bool:
    """A causal LM without a vision tower (``config`` from ``AutoConfig``)."""
    if getattr(config, "vision_config", None) is not None or getattr(config, "text_config", None) is not None:
        return False
    archs = getattr(config, "architectures", None) or []
    return not archs or any(a.endswith("ForCausalLM") for a in archs)


def _flatten(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            if any(p.get("type") in ("image", "image_url") for p in content):
                raise DataError("a training row holds an image but the base model is a text-only causal LM",
                                "remove the images from the data, or fine-tune an image-text-to-text model")
            content = "\n".join(p["text"] for p in content if p.get("type") == "text")
        out.append({"role": m["role"], "content": content})
    return out


class TextProcessor:
    """The processor interface the fine-tuning code uses, over a causal LM's tokenizer."""

    image_token_id = NO_IMAGE_TOKEN

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the text model's tokenizer has no chat template",
                              "save the tokenizer with a chat_template (fine-tuning renders chat turns)")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    @property
    def chat_template(self) -> str:
        return str(self.tokenizer.chat_template)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(_flatten(messages), add_generation_prompt=add_generation_prompt,
                                                  tokenize=tokenize, **kwargs)

    def __call__(self, text: list[str] | str, images: Any = None, **kwargs: Any) -> Any:
        if images:
            raise DataError("images were given to a text-only causal LM",
                            "remove the images from the data, or fine-tune an image-text-to-text model")
        kwargs.setdefault("add_special_tokens", False)  # the chat template already holds every special token
        return self.tokenizer(text, **kwargs)

    def save_pretrained(self, folder: str | Path) -> Any:
        return self.tokenizer.save_pretrained(folder)
