"""``moesaic export-adapter RUN OUTPUT``: merge a LoRA adapter (text and vision-tower LoRA alike) into full
weights that plain ``transformers`` loads (``AutoModelForImageTextToText.from_pretrained``, or
``AutoModelForCausalLM`` for a text-only causal LM).

Why merge: serving stacks such as vLLM ignore LoRA on the vision tower, so an adapter trained there must be
folded into the weights. The adapter itself stays where it is (a PEFT folder, ``RUN/adapter``). With
``verify`` the merged model's logits are compared with the adapter model's on a probe input.

A QLoRA adapter (``quantization.json`` beside it) is merged the same way, into the full-precision base
re-loaded unquantised — never into de-quantised 4-bit weights; ``verify`` then also reports how far the
merged model is from the quantised model + adapter that training saw (the quantisation error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from moesaic.atomic import atomic_dir
from moesaic.errors import ConfigError, missing_extra
from moesaic.finetune.config import ExportAdapterConfig
from moesaic.finetune.model import load_model, load_processor, save_processor

__all__ = ["ExportResult", "export_adapter", "find_adapter", "probe_logits"]


class ExportResult(BaseModel):
    output: str
    adapter: str
    base_model: str
    merged_modules: int
    vision_lora_modules: int
    max_logit_diff: float | None
    quantized_logit_diff: float | None = None  # QLoRA: merged vs 4-bit base + adapter

    def render(self) -> str:
        diff = "not checked" if self.max_logit_diff is None else f"max |Δlogit| {self.max_logit_diff:.2e}"
        text = (f"merged {self.merged_modules} LoRA modules ({self.vision_lora_modules} in the vision tower) "
                f"into {self.base_model}\nsaved to {self.output} ({diff}); adapter kept at {self.adapter}")
        if self.quantized_logit_diff is not None:
            text += (f"\nQLoRA adapter merged into the full-precision base; vs the 4-bit base + adapter: "
                     f"max |Δlogit| {self.quantized_logit_diff:.2e} (quantisation error)")
        return text


def find_adapter(path: str | Path) -> Path:
    """The PEFT folder: ``path`` itself or ``path/adapter`` (a finetune output folder)."""
    p = Path(path)
    for cand in (p, p / "adapter"):
        if (cand / "adapter_config.json").is_file():
            return cand
    raise ConfigError(f"no LoRA adapter (adapter_config.json) in {p} or {p / 'adapter'}",
                      "pass the output_dir of a 'moesaic finetune' run with method: lora or qlora, or a PEFT folder")


def probe_logits(model: Any, processor: Any) -> Any:
    """Logits of a fixed image + question (a question alone for a text-only LM), for comparing two models."""
    import torch
    from PIL import Image, ImageDraw

    from moesaic.finetune.evaluate import prompt_inputs
    from moesaic.finetune.text import TextProcessor

    text_only = isinstance(processor, TextProcessor)
    img = Image.new("RGB", (40, 32), "white")
    ImageDraw.Draw(img).ellipse([4, 4, 28, 28], fill="red")
    parts = [{"type": "text", "text": "What is shown?"}] if text_only else \
        [{"type": "image"}, {"type": "text", "text": "What is shown?"}]
    inputs = prompt_inputs(processor, [{"role": "user", "content": parts}], [] if text_only else [img])
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits.float()  # (1, seq, vocab)


def export_adapter(config: ExportAdapterConfig) -> ExportResult:
    """Merge a LoRA adapter into its base model's weights and save a plain transformers model."""
    try:
        from peft import PeftModel
    except ImportError:
        raise missing_extra("peft", "finetune") from None
    adapter = find_adapter(config.adapter)
    base = config.base_model or json.loads((adapter / "adapter_config.json").read_text()).get(
        "base_model_name_or_path")
    if not base or not (Path(base) / "config.json").is_file():
        raise ConfigError(f"base model {base!r} of adapter {adapter} is not a local model folder",
                          "pass --base-model PATH to the model the adapter was trained on")
    processor = load_processor(adapter if (adapter / "tokenizer_config.json").is_file() else base)
    peft_model = PeftModel.from_pretrained(load_model(base), adapter)
    lora_names = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]
    from moesaic.finetune.model import VISION_MARKERS

    vision = [n for n in lora_names if any(v in n.split(".") for v in VISION_MARKERS)]
    before = probe_logits(peft_model, processor) if config.verify else None
    merged = peft_model.merge_and_unload()  # the base was loaded unquantised, also for a QLoRA adapter
    after = probe_logits(merged, processor) if before is not None else None
    diff = float((after - before).abs().max()) if before is not None else None
    qdiff = _quantized_diff(base, adapter, processor, after) if after is not None else None
    with atomic_dir(config.output, overwrite=config.overwrite) as tmp:
        merged.save_pretrained(tmp)
        save_processor(processor, tmp)
        config.save(tmp)
    return ExportResult(output=str(config.output), adapter=str(adapter), base_model=str(base),
                        merged_modules=len(lora_names), vision_lora_modules=len(vision), max_logit_diff=diff,
                        quantized_logit_diff=qdiff)


def _quantized_diff(base: str, adapter: Path, processor: Any, merged_logits: Any) -> float | None:
    """QLoRA adapters: max |Δlogit| between the merged model and the 4-bit base + adapter it was trained on."""
    from moesaic.finetune.quantize import load_qlora, read_settings

    quant = read_settings(adapter)
    if quant is None:
        return None
    return float((probe_logits(load_qlora(base, adapter, quant), processor) - merged_logits).abs().max())
