"""What a checkpoint is, read from its ``config.json`` alone (no weights, no torch).

Used to validate a merge before any weight is loaded: every expert must share the base's architecture
and shapes, and some output architecture must support it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moesaic.errors import ConfigError

__all__ = ["read_config", "text_config", "text_model_type", "shape_mismatches", "sparse_layer_indices", "SHAPE_KEYS"]

# Keys whose values must agree between base and experts for weights to be interchangeable.
SHAPE_KEYS: tuple[str, ...] = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "hidden_act",
)


def read_config(model: str) -> dict[str, Any]:
    """The ``config.json`` of a local folder, or of a hub id already in the local cache."""
    path = Path(model)
    cfg_file = path / "config.json"
    if path.is_dir():
        if not cfg_file.is_file():
            raise ConfigError(f"{path} has no config.json", "point to a folder written by save_pretrained")
        return _parse(cfg_file)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - any hub-side failure means "not available offline"
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return _parse(Path(cached))
    raise ConfigError(
        f"model {model!r} is neither a local folder nor in the local cache",
        "download it first (huggingface-cli download ...) or give the path of a saved model folder",
    )


def _parse(cfg_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {cfg_file}: {exc}", "re-save the model with save_pretrained") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_file} does not hold a JSON object", "re-save the model with save_pretrained")
    return data


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's sub-config (VLMs nest it as ``text_config``); the config itself otherwise."""
    sub = config.get("text_config")
    return sub if isinstance(sub, dict) else config


def text_model_type(config: dict[str, Any]) -> str | None:
    sub = config.get("text_config")
    if isinstance(sub, dict):
        return sub.get("model_type")
    return config.get("model_type")


def sparse_layer_indices(config: dict[str, Any], num_layers: int) -> list[int]:
    """Decoder layers whose MLP becomes sparse: all but Mllama's cross-attention layers, which stay dense."""
    dense = set(text_config(config).get("cross_attention_layers") or [])
    return [i for i in range(num_layers) if i not in dense]


def shape_mismatches(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Human-readable differences that make ``other``'s weights incompatible with ``base``'s."""
    problems = []
    if base.get("model_type") != other.get("model_type"):
        problems.append(f"model_type {other.get('model_type')!r} != base {base.get('model_type')!r}")
    bt, ot = text_config(base), text_config(other)
    if bt.get("model_type") != ot.get("model_type"):
        problems.append(f"text model_type {ot.get('model_type')!r} != base {bt.get('model_type')!r}")
    for key in SHAPE_KEYS:
        if bt.get(key) != ot.get(key):
            problems.append(f"text {key} {ot.get(key)!r} != base {bt.get(key)!r}")
    bv, ov = base.get("vision_config"), other.get("vision_config")
    if isinstance(bv, dict) and isinstance(ov, dict):
        for key in ("hidden_size", "num_hidden_layers", "patch_size", "image_size", "intermediate_size"):
            if bv.get(key) != ov.get(key):
                problems.append(f"vision {key} {ov.get(key)!r} != base {bv.get(key)!r}")
    return problems
