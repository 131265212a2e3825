"""Loading a transformers VLM and its processor by hub id or local path, with dtype and device choice.

Failures become :class:`~moesaic.errors.ModelLoadError` naming the model and the likely fix (a wrong
path, a hub id that is not downloaded while offline, an architecture the generic loader cannot build).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.backends.base import BackendOptions
from moesaic.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

__all__ = ["resolve_device", "resolve_dtype", "load_model", "load_vlm", "load_processor_or_fail"]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> "torch.device":
    """``auto`` → cuda when available, else cpu; anything else is passed to ``torch.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}", "use auto, cpu, cuda or cuda:N", param="device")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for but CUDA is not available", "use --device cpu or auto")
    return resolved


def resolve_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """``auto`` → bfloat16 on a GPU that supports it (else float16), float32 on cpu."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _load_error(model: str, exc: Exception) -> ModelLoadError:
    path = Path(model).expanduser()
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Unrecognized configuration class" in first_line:
        from moesaic.backends.registry import list_backends

        names = ", ".join(spec.name for spec in list_backends())
        return ModelLoadError(
            f"{model} is not an image-text-to-text model the generic backend can load ({first_line})",
            f"let moesaic pick the backend from config.json (drop --backend), or name one of: {names}",
        )
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        if not path.exists():
            return ModelLoadError(f"model folder {model} does not exist", "check the path you passed")
        hint = "the folder needs config.json, the weights (*.safetensors) and the processor files"
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        hint = (
            f"check the model id; HF_HUB_OFFLINE is set, so download it first "
            f"(hf download {model}) or pass a local folder"
        )
    else:
        hint = "check the model id or path; for a hub id, download it first or set HF_HUB_OFFLINE=0 with network"
    return ModelLoadError(f"could not load model {model!r}: {first_line}", hint)


def load_model(model: str, model_cls: Any, options: BackendOptions) -> tuple["PreTrainedModel", "torch.device"]:
    """``model_cls.from_pretrained(model)`` in the chosen dtype, moved to the chosen device, in eval mode.

    ``options.quantization`` 4bit/8bit: linear layers load quantised by bitsandbytes straight onto the device
    (:mod:`moesaic.backends.quantization` says what is and is not quantised); the rest keeps ``dtype``.
    """
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if options.quantization != "none":
        from moesaic.backends.quantization import bnb_config

        kwargs.update(quantization_config=bnb_config(options.quantization, compute_dtype=dtype),
                      device_map={"": device})
    try:
        loaded = model_cls.from_pretrained(model, **kwargs)
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        raise _load_error(model, exc) from exc
    log.info("loaded %s as %s (%s, %s, quantization %s)", model, type(loaded).__name__, dtype, device,
             options.quantization)
    return (loaded if options.quantization != "none" else loaded.to(device)).eval(), device


def load_vlm(model: str, options: BackendOptions) -> tuple["PreTrainedModel", "ProcessorMixin", "torch.device"]:
    """An image-text-to-text model and its processor (with chat template)."""
    from transformers import AutoModelForImageTextToText

    resolve_device(options.device)  # fail fast on a bad device, before reading any file
    processor = load_processor_or_fail(model)
    if not getattr(processor, "chat_template", None):
        raise ModelLoadError(
            f"the processor of {model!r} has no chat template",
            "add chat_template.jinja to the model folder (a base model needs one to take chat messages)",
        )
    loaded, device = load_model(model, AutoModelForImageTextToText, options)
    return loaded, processor, device


def load_processor_or_fail(model: str) -> "ProcessorMixin":
    """The processor of ``model``; failures become :class:`ModelLoadError` with the fix."""
    from moesaic.backends.compat import load_processor

    try:
        return load_processor(model)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise _load_error(model, exc) from exc
