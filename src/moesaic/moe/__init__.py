"""Mixture-of-experts builder: merge fine-tuned VLMs into a sparse MoE VLM, train its gates, report routing.

Commands: :func:`moesaic.moe.merge.merge`, :func:`moesaic.moe.gate_train.train_gates`,
:func:`moesaic.moe.report.route_report`. Output families live in ``mixtral.py``, ``qwen2_moe.py``,
``qwen3_vl_moe.py``, ``qwen3_5_moe.py`` and ``generic.py`` behind :mod:`moesaic.moe.arch`
(docs/architectures.md); native outputs are written tensor by tensor by ``stream.py``. Imported lazily so
``import moesaic.moe`` needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "merge": "moesaic.moe.merge:merge",
    "MergeResult": "moesaic.moe.merge:MergeResult",
    "MergeConfig": "moesaic.moe.config:MergeConfig",
    "ExpertSpec": "moesaic.moe.config:ExpertSpec",
    "TrainGatesConfig": "moesaic.moe.config:TrainGatesConfig",
    "RouteReportConfig": "moesaic.moe.config:RouteReportConfig",
    "train_gates": "moesaic.moe.gate_train:train_gates",
    "route_report": "moesaic.moe.report:route_report",
    "load_generic_moe": "moesaic.moe.generic:load_generic_moe",
    "load_moe": "moesaic.moe.routing:load_moe",
    "select_architecture": "moesaic.moe.arch:select_architecture",
    "list_architectures": "moesaic.moe.arch:list_architectures",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'moesaic.moe' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
