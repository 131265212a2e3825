"""QLoRA (Dettmers et al., 2023, arXiv:2305.14314): LoRA adapters trained on a frozen 4-bit base.

The base's linear layers load as bitsandbytes ``Linear4bit`` (NF4 or FP4, optionally with double-quantised
block scales, de-quantised to ``compute_dtype`` for each matmul); the LM head stays in full precision. PEFT's
``prepare_model_for_kbit_training`` freezes the base, casts the remaining half-precision parameters (norms,
embeddings) to float32 and turns gradient checkpointing on. The LoRA layers themselves are the ones
:func:`moesaic.finetune.model.apply_method` puts on any linear layer, vision tower excluded by default.

The resolved settings (the dtype ``auto`` became, the bitsandbytes version, what was kept in full precision)
go to ``quantization.json`` in the run folder and in ``adapter/``, so export and evaluation know the adapter
was trained against a quantised base: :func:`moesaic.finetune.export.export_adapter` still merges into the
full-precision weights, and reports how far that model is from the quantised one it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from moesaic.atomic import atomic_write_text
from moesaic.errors import ConfigError, ModelLoadError
from moesaic.finetune.config import QuantSettings

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["QUANT_FILE", "ResolvedQuantization", "resolve", "load_quantized", "load_qlora",
           "prepare_for_training",
           "write_settings", "read_settings"]

QUANT_FILE = "quantization.json"


class ResolvedQuantization(BaseModel):
    """What a QLoRA run's base really was: written next to the run and its adapter."""

    bits: int = 4
    quant_type: str
    double_quant: bool
    compute_dtype: str
    skip_modules: list[str]
    gradient_checkpointing: bool
    bitsandbytes: str
    quantized_linear: int | None = None
    full_precision_linear: list[str] | None = None


def resolve(settings: QuantSettings, device: "torch.device", gradient_checkpointing: bool) -> ResolvedQuantization:
    """Settings with ``auto`` decided for ``device``; fails (naming the extra) when bitsandbytes is missing."""
    import torch

    from moesaic.backends.quantization import require_bitsandbytes

    version = require_bitsandbytes()
    dtype = settings.compute_dtype
    if dtype == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if gpu_bf16 else "float32"
    return ResolvedQuantization(quant_type=settings.quant_type, double_quant=settings.double_quant,
                                compute_dtype=dtype, skip_modules=list(settings.skip_modules),
                                gradient_checkpointing=gradient_checkpointing, bitsandbytes=version)


def load_quantized(path: str | Path, resolved: ResolvedQuantization, device: "torch.device") -> Any:
    """The base model with 4-bit linear layers, on ``device``; other parameters in the checkpoint's dtype."""
    import torch

    from moesaic.backends.quantization import bnb_config, quantization_report
    from moesaic.finetune.model import load_model

    dtype = getattr(torch, resolved.compute_dtype)
    config = bnb_config("4bit", compute_dtype=dtype, quant_type=resolved.quant_type,
                        double_quant=resolved.double_quant, skip_modules=resolved.skip_modules)
    # the parts left unquantised load in the checkpoint's dtype (no float32 copy of a bf16 checkpoint while
    # loading); prepare_for_training casts them to float32 afterwards, as PEFT's recipe does
    model = load_model(path, "auto", quantization_config=config, device_map={"": device})
    report = quantization_report(model)
    if report.quantized_linear == 0:
        raise ModelLoadError(f"no linear layer of {path} was quantised",
                             "check quantization.skip_modules; method: qlora needs nn.Linear layers")
    resolved.quantized_linear, resolved.full_precision_linear = report.quantized_linear, report.full_precision_linear
    return model


def load_qlora(base: str | Path, adapter: Path, resolved: ResolvedQuantization) -> Any:
    """The quantised base with a trained adapter on it (on CPU): the model a QLoRA run evaluated."""
    import torch
    from peft import PeftModel

    base_model = prepare_for_training(load_quantized(base, resolved, torch.device("cpu")), False)  # as trained
    return PeftModel.from_pretrained(base_model, adapter).eval()


def prepare_for_training(model: Any, gradient_checkpointing: bool) -> Any:
    """Freeze the quantised base, upcast its small full-precision parts, and checkpoint activations if asked."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def write_settings(folder: Path, resolved: ResolvedQuantization) -> None:
    atomic_write_text(folder / QUANT_FILE, resolved.model_dump_json(indent=2))


def read_settings(folder: Path) -> ResolvedQuantization | None:
    """The settings a QLoRA adapter was trained with; None for a plain LoRA adapter."""
    path = folder / QUANT_FILE
    if not path.is_file():
        return None
    try:
        return ResolvedQuantization.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a quantization record written by moesaic finetune: {exc}",
                          "delete it to treat the adapter as plain LoRA, or re-run the export from the run folder")
