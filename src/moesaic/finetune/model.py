"""Loading a VLM and its processor for training, and choosing what trains (LoRA targets, frozen towers).

The processor loader falls back to an image-only Qwen-VL processor when transformers cannot build the
video processor (Qwen-VL processors need torchvision for videos; fine-tuning on images does not).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.errors import ConfigError, ModelLoadError, missing_extra

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["load_model", "load_processor", "save_processor", "image_token_id", "vision_module_names",
           "lora_targets", "apply_method", "VISION_MARKERS"]

log = logging.getLogger(__name__)

VISION_MARKERS = ("vision_model", "vision_tower", "visual", "vision_encoder", "image_encoder")
_QWEN_VL = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def _model_type(path: Path) -> str:
    try:
        return str(json.loads((path / "config.json").read_text())["model_type"])
    except (OSError, KeyError, json.JSONDecodeError):
        return ""


def load_processor(path: str | Path) -> Any:
    from transformers import AutoProcessor

    path = Path(path)
    try:  # the shared loader (torchvision-free assembly) when this build has it
        from moesaic.backends.compat import load_processor as shared_loader
    except ImportError:
        shared_loader = AutoProcessor.from_pretrained
    try:
        return shared_loader(path)
    except (ImportError, ValueError, OSError, TypeError) as exc:
        if _model_type(path) not in _QWEN_VL:
            raise ModelLoadError(f"cannot load the processor of {path}: {exc}",
                                 "the folder needs the processor/tokenizer files saved with the model") from None
        log.info("building an image-only Qwen-VL processor for %s (%s)", path, exc)
        return _image_only_qwen_processor(path)


def _image_only_qwen_processor(path: Path) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer, ProcessorMixin
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    class ImageOnlyQwenVLProcessor(Qwen3VLProcessor):
        """Qwen-VL processor without the (torchvision-only) video processor."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None) -> None:
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.video_processor = None
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)

    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    return ImageOnlyQwenVLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def save_processor(processor: Any, folder: Path) -> None:
    """Save so :func:`load_processor` (and AutoProcessor where it can) reads it back."""
    if getattr(processor, "video_processor", "absent") is None:
        processor.tokenizer.chat_template = processor.chat_template
        processor.tokenizer.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)
    else:
        processor.save_pretrained(folder)


def load_model(path: str | Path, dtype: str = "float32") -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"base model {path} has no config.json",
                          "point base_model at a saved transformers model folder (save_pretrained output)")
    try:
        return AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {path} as an image-text-to-text model: {exc}",
                             "use a VLM folder (Idefics3/SmolVLM, LLaVA, Qwen3-VL, ...)") from None


def image_token_id(processor: Any, model: Any = None) -> int:
    tid = getattr(processor, "image_token_id", None)
    if tid is None and model is not None:
        tid = getattr(model.config, "image_token_id", None) or getattr(model.config, "image_token_index", None)
    if tid is None:
        raise ModelLoadError("cannot find the model's image token", "use a processor that defines image_token_id")
    return int(tid)


def vision_module_names(model: Any) -> list[str]:
    return [n for n, _ in model.named_modules() if any(m in n.split(".") for m in VISION_MARKERS)]


def _is_vision(name: str) -> bool:
    return any(m in name.split(".") for m in VISION_MARKERS)


def lora_targets(model: Any, targets: list[str] | str, include_vision: bool) -> list[str]:
    """Full names of the linear layers that get LoRA (never the LM head)."""
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        if _is_vision(name) and not include_vision:
            continue
        if targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets):
            names.append(name)
    if not names:
        raise ConfigError(f"no linear layer matches lora.target_modules={targets!r}",
                          "use 'all-linear' or suffixes such as [q_proj, v_proj]")
    return names


def apply_method(model: Any, method: str, lora: Any, freeze_vision: bool) -> "torch.nn.Module":
    """Wrap in PEFT LoRA or set requires_grad for full training; returns the model to train."""
    if method == "full":
        for name, param in model.named_parameters():
            param.requires_grad = not (freeze_vision and _is_vision(name))
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise missing_extra("peft", "finetune") from None
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora_targets(model, lora.target_modules, lora.include_vision),
                        modules_to_save=list(lora.modules_to_save) or None, bias="none")
    return get_peft_model(model, config)
