"""Typed, frozen run configuration.

A config has the sections ``data``, ``backend``, ``ddrm``, ``train``, ``model`` and a top-level ``seed``
(DESIGN §7). Build one with :func:`load_config` from a YAML file / dict plus dotted overrides
(``ddrm.steps=20``); every key and value is validated and errors name the key and what is allowed. The
sections themselves are in :mod:`ddrm.config_sections` (every name there is importable from here).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config_sections import (  # noqa: F401 - re-exported: the sections and their constants
    ACTIVATIONS, BACKEND_DEFAULTED, DENOISERS, INFERENCE_STARTS, MAX_SEED, POOLINGS, PRECISIONS, SAMPLING,
    BackendConfig, DataConfig, DDRMConfig, ModelConfig, TrainConfig, _require, backend_defaults, setting_fields,
    settings,
)
from .errors import ConfigError


@dataclass(frozen=True)
class Config:
    """A whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    ddrm: DDRMConfig = field(default_factory=DDRMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        _require(0 <= self.seed < MAX_SEED, "seed", self.seed, f"an integer in [0, {MAX_SEED})")

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of the settings (YAML/JSON-ready; tuples become lists)."""
        return _plain({**{name: settings(getattr(self, name)) for name in SECTIONS}, "seed": self.seed})

    def to_flat_dict(self) -> dict[str, Any]:
        """``{"ddrm.steps": 20, ...}`` — the form used for MLflow params and ``--set``."""
        return flatten(self.to_dict())

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A new config with dotted overrides applied (validated)."""
        nested = self.to_dict()
        for key in self.backend.defaulted:  # unset again: a changed backend.name brings its own defaults
            if f"backend.{key}" not in overrides:
                nested["backend"][key] = None
        return config_from_dict(apply_overrides(nested, overrides))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


SECTIONS: dict[str, type] = {"data": DataConfig, "backend": BackendConfig, "ddrm": DDRMConfig, "train": TrainConfig,
                             "model": ModelConfig}


def allowed_keys() -> list[str]:
    """Every dotted key a config accepts."""
    keys = ["seed"]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in setting_fields(cls)]
    return keys


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one value against a field's type hint; raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected a list")
        return tuple(_coerce(v, typing.get_args(hint)[0], key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected a string")
        return value
    return value


def _build_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in setting_fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{section}.{key}'; allowed in '{section}': {sorted(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: Mapping[str, Any] | None) -> Config:
    """Validate a nested dict into a :class:`Config` (missing keys take defaults)."""
    raw = dict(raw or {})
    unknown = set(raw) - set(SECTIONS) - {"seed"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: {sorted(SECTIONS) + ['seed']}")
    kwargs: dict[str, Any] = {s: _build_section(cls, raw.get(s) or {}, s) for s, cls in SECTIONS.items()}
    kwargs["seed"] = _coerce(raw.get("seed", 0), int, "seed")
    return Config(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """``"ddrm.steps=20"`` -> ``("ddrm.steps", 20)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. ddrm.steps=20")
    key, _, raw_value = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        value = raw_value
    return key, value


def apply_overrides(nested: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (copy); unknown keys raise ConfigError."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in nested.items()}
    allowed = allowed_keys()
    for key, value in overrides.items():
        if key not in allowed:
            raise ConfigError(f"unknown config key '{key}'; allowed keys: {', '.join(allowed)}")
        if key == "seed":
            out["seed"] = value
            continue
        section, name = key.split(".", 1)
        out.setdefault(section, {})
        out[section] = dict(out[section] or {})
        out[section][name] = value
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Config from an optional YAML file plus dotted overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping with sections {sorted(SECTIONS)}")
    return config_from_dict(apply_overrides(raw, overrides or {}))
