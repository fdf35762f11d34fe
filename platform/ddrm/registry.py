"""Name -> model class. Each backend is one file that registers itself with :func:`register_backend`."""

from __future__ import annotations

from typing import Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_BACKENDS: dict[str, type] = {}
_MODELS: dict[str, type] = {}


def register_backend(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a backend available as ``backend.name: <name>``."""

    def decorate(cls: type[T]) -> type[T]:
        if name in _BACKENDS and _BACKENDS[name] is not cls:
            raise ValueError(f"backend {name!r} registered twice")
        _BACKENDS[name] = cls
        return cls

    return decorate


def _load_all() -> None:
    from . import backends  # noqa: F401  (importing the package imports every backend file)


def backend_names() -> list[str]:
    """Sorted registered backend names."""
    _load_all()
    return sorted(_BACKENDS)


def get_backend(name: str) -> type:
    """The backend class registered under ``name``."""
    _load_all()
    if name not in _BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; available: {sorted(_BACKENDS)}")
    return _BACKENDS[name]


def register_model(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a standalone model available as ``model.name: <name>``."""

    def decorate(cls: type[T]) -> type[T]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = cls
        return cls

    return decorate


def _load_models() -> None:
    from . import models  # noqa: F401  (importing the package imports every model file)


def model_names() -> list[str]:
    """Sorted registered standalone model names."""
    _load_models()
    return sorted(_MODELS)


def get_model(name: str) -> type:
    """The standalone model class registered under ``name``."""
    _load_models()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(_MODELS)}")
    return _MODELS[name]
