"""Registry of backends; built-ins register like plugins do.

``load_backend("starter")`` gives the offline starter experts (``"starter:llm"``, a variant, is
``NAME:VARIANT`` of a registered backend, passed whole to its factory); any other string is a hub id or a
local path, routed by its ``config.json`` (``model_type``) to the backend that claims it, else to the generic
transformers VLM backend. Targets are ``"module:attr"`` strings so nothing heavy is imported until used.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moesaic.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.backends.base import Backend, BackendOptions

__all__ = ["BackendSpec", "register_backend", "list_backends", "load_backend", "resolve_backend", "model_type_of"]


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target: str  # "module:callable(model: str, options: BackendOptions) -> Backend"
    description: str
    model_types: tuple[str, ...] = ()  # config.json model_type values this backend claims
    quantizable: bool = False  # honours BackendOptions.quantization (loads through transformers)


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(
    name: str, target: str, description: str = "", model_types: tuple[str, ...] = (), quantizable: bool = False
) -> BackendSpec:
    spec = BackendSpec(name, target, description, model_types, quantizable)
    _REGISTRY[name] = spec
    return spec


register_backend("starter", "moesaic.experts.backend:StarterBackend.create", "offline starter experts (default)")
register_backend("hf", "moesaic.backends.hf:HFBackend.create", "any transformers image-text-to-text VLM",
                 quantizable=True)
register_backend("vilt", "moesaic.backends.vilt:ViltBackend.create", "ViLT: VQA as answer classification", ("vilt",),
                 quantizable=True)
register_backend("git", "moesaic.backends.git:GitBackend.create", "GIT: image captioning", ("git",), quantizable=True)
register_backend(
    "moesaic-moe",
    "moesaic.moe.generic:GenericMoEBackend.create",
    "moesaic generic MoE (loaded without remote code)",
    ("moesaic_generic_moe",),
)


def list_backends() -> list[BackendSpec]:
    return list(_REGISTRY.values())


def model_type_of(model: str) -> str | None:
    """``model_type`` from a local folder's config.json (moesaic's own marker wins), else None."""
    cfg = Path(model) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(data.get("moesaic"), dict) and data["moesaic"].get("kind"):
        return str(data["moesaic"]["kind"])
    return data.get("model_type")


def resolve_backend(model: str, backend: str | None = None) -> BackendSpec:
    """Pick the backend spec for ``model`` (or the one named by ``backend``)."""
    if backend is not None:
        if backend not in _REGISTRY:
            names = ", ".join(sorted(_REGISTRY))
            raise ConfigError(f"unknown backend {backend!r}", f"choose one of: {names}", param="backend")
        return _REGISTRY[backend]
    if model in _REGISTRY:
        return _REGISTRY[model]
    name, sep, _ = model.partition(":")
    if sep and name in _REGISTRY and not Path(model).exists():  # "starter:llm"; hub ids hold no ':'
        return _REGISTRY[name]
    mtype = model_type_of(model)
    for spec in _REGISTRY.values():
        if mtype is not None and mtype in spec.model_types:
            return spec
    return _REGISTRY["hf"]


def _import_target(target: str) -> Callable[..., "Backend"]:
    module, _, attr = target.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def load_backend(
    model: str = "starter", options: "BackendOptions | None" = None, *, backend: str | None = None
) -> "Backend":
    """Load a backend for ``model``: ``"starter"``, a hub id or a local path."""
    from moesaic.backends.base import BackendOptions

    spec = resolve_backend(model, backend)
    options = options or BackendOptions()
    if options.quantization != "none" and not spec.quantizable:
        able = ", ".join(s.name for s in _REGISTRY.values() if s.quantizable)
        raise ConfigError(f"backend {spec.name!r} cannot load {model!r} with quantization={options.quantization}",
                          f"drop --quantization, or use a transformers model (backends: {able})", param="quantization")
    factory = _import_target(spec.target)
    return factory(model, options)
