"""Loading transformers models with bitsandbytes-quantised linear layers (4-bit NF4/FP4 or 8-bit LLM.int8).

One place builds the ``BitsAndBytesConfig`` for both uses: inference (``--quantization 4bit|8bit`` of ask,
serve and eval) and the frozen base of QLoRA training (:mod:`moesaic.finetune.quantize`).

What gets quantised: every ``torch.nn.Linear`` except the LM head (transformers keeps it, and any module
named in ``skip_modules``, in full precision). Embeddings, norms, and parameters that are not ``nn.Linear``
stay in the load dtype — in particular the experts of Mixtral and Qwen3-VL-MoE, which transformers stores as
fused 3-D parameters (experts, in, out), and their routers (a plain ``weight`` parameter): a merged MoE gets
its attention, vision tower and projector quantised, not its experts. :func:`quantization_report` counts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from moesaic.errors import ConfigError, missing_extra

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import BitsAndBytesConfig

__all__ = ["Quantization", "QuantizationReport", "require_bitsandbytes", "bnb_config", "quantization_report"]

Quantization = Literal["none", "4bit", "8bit"]


def require_bitsandbytes() -> str:
    """The installed bitsandbytes version; a :class:`MissingDependencyError` naming the extra otherwise."""
    try:
        import bitsandbytes
    except ImportError:
        raise missing_extra("bitsandbytes", "finetune") from None
    return str(bitsandbytes.__version__)


def bnb_config(bits: Quantization, *, compute_dtype: "torch.dtype", quant_type: str = "nf4",
               double_quant: bool = True, skip_modules: Sequence[str] = ()) -> "BitsAndBytesConfig":
    """The transformers quantisation config for ``bits`` ("4bit" or "8bit")."""
    if bits not in ("4bit", "8bit"):
        raise ConfigError(f"quantization must be 4bit or 8bit here, got {bits!r}", "pass --quantization 4bit or 8bit")
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    skip = _skip_patterns(skip_modules)
    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=skip)


def _skip_patterns(names: Sequence[str]) -> list[str] | None:
    """None: transformers' default (the LM head and tied outputs). Otherwise the LM head plus each name, matched
    as a module name or its last dotted parts ("merger" keeps ``model.visual.merger`` and all inside it)."""
    if not names:
        return None
    import re

    return ["lm_head", *(rf"(?:.*\.)?{re.escape(n)}" for n in names)]


class QuantizationReport(BaseModel):
    """What a loaded model holds quantised and what it keeps in full precision."""

    quantized_linear: int  # Linear4bit / Linear8bitLt layers
    full_precision_linear: list[str]  # nn.Linear layers left as they were (LM head, skipped modules)
    quantized_params: int  # parameters inside quantised layers (counted unpacked)
    full_precision_params: int  # everything else: embeddings, norms, fused 3-D experts, routers

    def render(self) -> str:
        total = self.quantized_params + self.full_precision_params
        share = self.quantized_params / total if total else 0.0
        return (f"{self.quantized_linear} linear layers quantised ({share:.0%} of parameters); kept in full "
                f"precision: {', '.join(self.full_precision_linear) or 'no linear layer'} and "
                f"{self.full_precision_params:,} other parameters")


def quantization_report(model: Any) -> QuantizationReport:
    import torch

    quantized, kept, q_params = 0, [], 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear4bit", "Linear8bitLt"):
            quantized += 1
            q_params += module.in_features * module.out_features
            seen.add(id(module.weight))
        elif type(module) is torch.nn.Linear:
            kept.append(name)
    other = sum(p.numel() for p in model.parameters() if id(p) not in seen)
    return QuantizationReport(quantized_linear=quantized, full_precision_linear=kept, quantized_params=q_params,
                              full_precision_params=other)
