"""The backend for generic moesaic MoEs: the transformers VLM backend around a model built by
:func:`moesaic.moe.generic.load_generic_moe` (no remote code). ``moesaic.load(path)`` picks it through
the registry's ``"moesaic": {"kind": "moesaic_generic_moe"}`` marker."""

from __future__ import annotations

from moesaic.backends.base import BackendOptions
from moesaic.backends.hf import HFBackend

__all__ = ["GenericMoEBackend"]


class GenericMoEBackend(HFBackend):
    """A generic MoE answering through its processor's chat template; ``experts`` names its experts."""

    @classmethod
    def create(cls, model: str, options: BackendOptions) -> "GenericMoEBackend":
        from moesaic.moe.generic import load_generic_moe
        from moesaic.moe.loading import torch_dtype

        loaded, processor = load_generic_moe(model, torch_dtype(options.dtype))
        if options.device not in ("auto", "cpu"):
            loaded = loaded.to(options.device)
        from moesaic.moe.sequence_routing import set_routing

        set_routing(loaded, options.routing)
        backend = cls(loaded, processor, name=model, max_batch_size=options.max_batch_size)
        backend.experts = list(loaded.config.moesaic.get("experts") or [])
        return backend
