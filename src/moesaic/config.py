"""Command configs: one frozen pydantic model per command, loaded from YAML with flag overrides.

Imports no torch. ``CommandConfig.load(yaml_path, {"gate.lr": 0.1})`` merges a YAML file with dotted
overrides and validates; validation errors become a :class:`~moesaic.errors.ConfigError` that names the
field and the fix. ``config.save(folder)`` writes the resolved config next to an artefact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from moesaic.atomic import atomic_write_text
from moesaic.errors import ConfigError

__all__ = ["CommandConfig", "FrozenModel", "load_yaml", "apply_overrides", "RESOLVED_CONFIG_NAME"]

RESOLVED_CONFIG_NAME = "moesaic_config.yaml"


class FrozenModel(BaseModel):
    """Immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class CommandConfig(FrozenModel):
    """Base of every command's config.

    ``positional`` names the fields the CLI takes as positional arguments, in order.
    """

    positional: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Self:
        data: dict[str, Any] = load_yaml(path) if path is not None else {}
        data = apply_overrides(data, overrides or {})
        return cls.validated(data, source=str(path) if path else None)

    @classmethod
    def validated(cls, data: dict[str, Any], source: str | None = None) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, source) from None

    def save(self, folder: str | os.PathLike[str], name: str = RESOLVED_CONFIG_NAME) -> Path:
        """Write the resolved config (YAML) into ``folder`` atomically."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return atomic_write_text(Path(folder) / name, text)


def config_error(exc: ValidationError, source: str | None = None) -> ConfigError:
    """Turn pydantic's error into one readable line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    where = f" in {source}" if source else ""
    return ConfigError(
        f"invalid config{where}: " + "; ".join(lines),
        "fix the named keys (flags use --key-name, YAML uses key_name)",
    )


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", "check the path you passed")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", "fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of keys, not {type(data).__name__}", "write key: value lines")
    return data


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted keys (``a.b.c``) set to the override values."""
    out: dict[str, Any] = dict(data)
    for dotted, value in overrides.items():
        keys = dotted.replace("-", "_").split(".")
        node = out
        for key in keys[:-1]:
            child = node.get(key)
            child = dict(child) if isinstance(child, dict) else {}
            node[key] = child
            node = child
        node[keys[-1]] = value
    return out
