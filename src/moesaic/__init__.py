"""moesaic: build, fine-tune, merge and serve mixture-of-experts vision-language models.

The public API is imported lazily so ``import moesaic`` stays light (no torch until a model is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "moesaic.backends.registry:load_backend",
    "ask": "moesaic.ask:ask",
    "AskConfig": "moesaic.ask:AskConfig",
    "merge": "moesaic.moe.merge:merge",
    "MergeConfig": "moesaic.moe.config:MergeConfig",
    "train_gates": "moesaic.moe.gate_train:train_gates",
    "finetune": "moesaic.finetune.train:finetune",
    "FinetuneConfig": "moesaic.finetune.config:FinetuneConfig",
    "serve": "moesaic.serve.app:serve",
    "evaluate": "moesaic.eval.run:evaluate",
    "EvalConfig": "moesaic.eval.config:EvalConfig",
    "find": "moesaic.tasks.search.video_find:find",
    "FindConfig": "moesaic.tasks.search.video_find:FindConfig",
    "MoesaicError": "moesaic.errors:MoesaicError",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'moesaic' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
