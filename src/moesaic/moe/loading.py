"""Loading dense source models and their processors (offline, from local folders or the local cache)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from moesaic.errors import ModelLoadError

__all__ = ["load_dense", "load_processor", "torch_dtype", "model_class_for"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype | None:
    """``"auto"`` → None (keep the checkpoint's), else the torch dtype."""
    return _DTYPES.get(name)


def model_class_for(config: Any) -> Any:
    """The class named in ``config.architectures`` when transformers has it, else the auto class."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    if getattr(config, "text_config", None) is not None or getattr(config, "vision_config", None) is not None:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def load_dense(path: str, dtype: torch.dtype | None = None) -> nn.Module:
    """A saved transformers model in eval mode (no remote code)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
        cls = model_class_for(config)
        kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {"dtype": "auto"}
        model = cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {path}: {exc}", "check the folder holds a saved model") from None
    return model.eval()


def load_processor(path: str) -> Any:
    """The processor (or tokenizer for text-only models) saved with a model; None when there is none."""
    from transformers import AutoTokenizer

    from moesaic.backends.compat import load_processor as load_vlm_processor  # works without torchvision

    for loader in (load_vlm_processor, AutoTokenizer.from_pretrained):
        try:
            return loader(path)
        except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:  # ImportError: needs torchvision
            log.debug("could not load a processor from %s: %s", path, exc)
    return None
