"""Output architectures: the MoE model families a merge can produce, and a registry among them.

Each family (one file each: ``mixtral.py``, ``qwen2_moe.py``, ``qwen3_vl_moe.py``, ``generic.py``) says whether it
``supports`` a base config — with the reason when it does not — and ``build``s the MoE model in memory
from a loaded base model and an :class:`MoEPlan`. Native families construct the target transformers
model from its config and fill its own state dict; ``save`` then uses ``save_pretrained``.
Idea after mergekit-moe's ``MoEOutputArchitecture`` (name / supports(explain) / write).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from moesaic.errors import UnsupportedArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from moesaic.moe.layers import ExpertMLP

__all__ = [
    "MoEPlan",
    "OutputArchitecture",
    "register_architecture",
    "get_architecture",
    "list_architectures",
    "select_architecture",
]


@dataclass
class MoEPlan:
    """Everything an output architecture needs besides the base model."""

    num_experts: int
    top_k: int
    gates: list["torch.Tensor"]  # per layer: (num_experts, hidden)
    experts: list[list["ExpertMLP"]]  # per layer, per expert: (gate (I, H), up (I, H), down (H, I))
    labels: list[str] = field(default_factory=list)
    # decoder layers that become sparse, in order (gates/experts are per entry); None: every layer.
    # Mllama's cross-attention layers stay dense, so its plan lists only the self-attention layers.
    layers: list[int] | None = None
    intermediate: int | None = None  # set when ``experts`` is left empty (the streaming writer reads them lazily)

    @property
    def intermediate_size(self) -> int:
        return self.intermediate if self.intermediate is not None else int(self.experts[0][0][0].shape[0])


class OutputArchitecture(ABC):
    """One MoE output family."""

    name: ClassVar[str]
    description: ClassVar[str]
    native: ClassVar[bool] = True  # loads with plain transformers (no moesaic code)
    streams: ClassVar[bool] = False  # implements the tensor-by-tensor writer's hooks below (moe/stream.py)

    @abstractmethod
    def supports(self, config: dict[str, Any], explain: bool = True) -> tuple[bool, str]:
        """Whether a base ``config.json`` (as a dict) can become this family, and why (not)."""

    @abstractmethod
    def build(self, base: "nn.Module", plan: MoEPlan) -> "nn.Module":
        """The MoE model in memory: the base's shared weights, the plan's experts and gates."""

    # -- streaming writer hooks: the output's config and its on-disk tensor names (the names transformers'
    # own save_pretrained writes for the family), given a decoder layer's on-disk prefix such as
    # "language_model.model.layers.3".
    def output_config(self, base_config: Any, plan: MoEPlan) -> Any:
        raise NotImplementedError(f"{self.name} does not stream")

    def router_key(self, layer: str) -> str:
        raise NotImplementedError(f"{self.name} does not stream")

    def expert_keys(self, layer: str, expert: int) -> tuple[str, str, str]:
        """On-disk names of expert ``expert``'s (gate, up, down) weights in ``layer``."""
        raise NotImplementedError(f"{self.name} does not stream")

    def extra_tensors(self, layer: str, hidden: int) -> dict[str, "torch.Tensor"]:
        """Tensors of ``layer``'s sparse block that come from neither base nor experts."""
        return {}

    def save(self, model: "nn.Module", processor: Any, folder: Path) -> None:
        """Write model (+ processor) into ``folder`` (already a fresh temporary folder)."""
        model.save_pretrained(folder)  # type: ignore[operator]
        if processor is not None:
            processor.save_pretrained(folder)

    def load(self, folder: Path) -> "nn.Module":
        """Load what :meth:`save` wrote (the class its config names, as plain transformers would)."""
        from moesaic.moe.loading import load_dense

        return load_dense(str(folder))


_ARCHITECTURES: dict[str, str] = {}  # name -> "module:Class"; auto tries them in this order


def register_architecture(name: str, target: str) -> None:
    _ARCHITECTURES[name] = target


register_architecture("mixtral", "moesaic.moe.mixtral:MixtralOutput")
register_architecture("qwen2_moe", "moesaic.moe.qwen2_moe:Qwen2MoeOutput")
register_architecture("qwen3_vl_moe", "moesaic.moe.qwen3_vl_moe:Qwen3VLMoeOutput")
register_architecture("qwen3_5_moe", "moesaic.moe.qwen3_5_moe:Qwen3_5MoeOutput")
register_architecture("generic", "moesaic.moe.generic:GenericOutput")


def get_architecture(name: str) -> OutputArchitecture:
    if name not in _ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"unknown output architecture {name!r}", f"choose one of: auto, {', '.join(_ARCHITECTURES)}"
        )
    module, _, attr = _ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), attr)()


def list_architectures() -> list[OutputArchitecture]:
    return [get_architecture(n) for n in _ARCHITECTURES]


def select_architecture(config: dict[str, Any], requested: str = "auto") -> OutputArchitecture:
    """The requested family (or, for ``auto``, the first that supports ``config``); else one clear error
    that gives every family's reason and names the families that would work for this model."""
    names = list(_ARCHITECTURES) if requested == "auto" else [requested]
    verdicts: list[str] = []
    for name in names:
        arch = get_architecture(name)
        ok, reason = arch.supports(config, explain=True)
        if ok:
            return arch
        verdicts.append(f"{name}: {reason}")
    mtype = config.get("model_type", "?")
    if requested != "auto":  # say which families would have worked
        others = [a.name for a in list_architectures() if a.name != requested and a.supports(config)[0]]
        if others:
            raise UnsupportedArchitectureError(
                f"output_architecture {requested!r} does not support model_type {mtype!r} ({verdicts[0]}); "
                f"supported for this model: {', '.join(others)}",
                f"set output_architecture to {others[0]} (or auto)",
            )
    raise UnsupportedArchitectureError(
        f"no MoE output architecture supports model_type {mtype!r} ({'; '.join(verdicts)})",
        "supported: " + "; ".join(f"{a.name} ({a.description})" for a in list_architectures()),
    )
