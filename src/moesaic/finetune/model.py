"""Loading a VLM (or a text-only causal LM) and its processor for training, and choosing what trains
(LoRA targets, frozen towers). A causal LM's tokenizer is wrapped in :class:`moesaic.finetune.text.TextProcessor`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.errors import ConfigError, ModelLoadError, missing_extra

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["load_model", "load_processor", "save_processor", "image_token_id", "vision_module_names",
           "lora_targets", "apply_method", "VISION_MARKERS", "PROJECTOR_MARKERS"]

VISION_MARKERS = ("vision_model", "vision_tower", "visual", "vision_encoder", "image_encoder")
PROJECTOR_MARKERS = ("merger", "connector", "multi_modal_projector", "deepstack_merger_list")


def load_processor(path: str | Path) -> Any:
    """The model's processor (via :func:`moesaic.backends.compat.load_processor`, which needs no torchvision);
    a bare tokenizer (text-only causal LM) comes wrapped in a :class:`~moesaic.finetune.text.TextProcessor`."""
    from moesaic.backends.compat import load_processor as compat_load
    from moesaic.finetune.text import TextProcessor

    path = Path(path)
    try:
        processor = compat_load(path)
    except (ImportError, ValueError, OSError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the processor of {path}: {exc}",
                             "the folder needs the processor/tokenizer files saved with the model") from None
    return processor if hasattr(processor, "tokenizer") else TextProcessor(processor)


def save_processor(processor: Any, folder: Path) -> None:
    """Save next to weights so :func:`load_processor` (and AutoProcessor) reads it back."""
    processor.save_pretrained(folder)


def load_model(path: str | Path, dtype: str = "float32", **load_kwargs: Any) -> Any:
    """An image-text-to-text model, or a causal LM when the folder holds a text-only decoder. ``dtype`` "auto"
    keeps the checkpoint's; ``load_kwargs`` go to ``from_pretrained`` (QLoRA: quantisation)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from moesaic.finetune.text import is_text_only

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"base model {path} has no config.json",
                          "point base_model at a saved transformers model folder (save_pretrained output)")
    try:
        text_only = is_text_only(AutoConfig.from_pretrained(path))
        cls = AutoModelForCausalLM if text_only else AutoModelForImageTextToText
        return cls.from_pretrained(path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), **load_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {path} as an image-text-to-text model or a causal LM: {exc}",
                             "use a VLM folder (Idefics3/SmolVLM, LLaVA, Qwen3-VL, ...) or a causal LM "
                             "(Llama, Qwen2, ...) saved with save_pretrained") from None


def image_token_id(processor: Any, base_model: str | Path | None = None) -> int:
    """The id of the image placeholder token: the processor's, else the model config's (no weights loaded)."""
    tid = getattr(processor, "image_token_id", None)  # TextProcessor: NO_IMAGE_TOKEN
    if tid is None and base_model is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base_model)
        tid = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    if tid is None:
        raise ModelLoadError("cannot find the model's image token", "use a processor that defines image_token_id")
    return int(tid)


def vision_module_names(model: Any) -> list[str]:
    return [n for n, _ in model.named_modules() if _is_vision(n)]


def _is_vision(name: str) -> bool:
    """Inside the vision tower, not counting the projector (Qwen-VL keeps its ``merger`` under ``visual``)."""
    parts = name.split(".")
    return any(m in parts for m in VISION_MARKERS) and not any(m in parts for m in PROJECTOR_MARKERS)


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
