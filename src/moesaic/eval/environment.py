"""The software and thread settings a measurement ran with, recorded beside its numbers so it can be reproduced."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform

__all__ = ["environment"]

_PACKAGES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "numpy", "moesaic")


def environment() -> dict[str, str]:
    """Python, OS/CPU, package versions and thread settings (torch intra-op threads, OMP_NUM_THREADS)."""
    info = {"python": platform.python_version(), "machine": f"{platform.system()} {platform.machine()}",
            "cpu_count": str(os.cpu_count())}
    for name in _PACKAGES:
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = "absent"
    try:
        import torch

        info["torch_threads"] = str(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a base dependency
        pass
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "unset")
    return info
