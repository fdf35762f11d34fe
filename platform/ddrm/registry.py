"""Name -> class registries. Each backend (``backend.name``) and each standalone model (``model.name``) is
one file that registers itself with :func:`register_backend` / :func:`register_model`."""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry:
    """Classes of one kind by name; ``package`` (imported on first lookup) holds the files that register."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make ``cls`` available as ``<kind>.name: <name>``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        importlib.import_module(f".{self.package}", __package__)  # importing the package registers its files
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self.names():
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._classes[name]


BACKENDS = Registry("backend", "backends")
MODELS = Registry("model", "baselines")
register_backend, backend_names, get_backend = BACKENDS.register, BACKENDS.names, BACKENDS.get
register_model, model_names, get_model = MODELS.register, MODELS.names, MODELS.get
