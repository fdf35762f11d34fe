"""Name -> (class, params) registries, filled by the files themselves.

Each model (``model.name``: a BPR backend in ``backends/`` or a standalone model in ``baselines/``) and each
loss-side plug-in (``denoise.name``, ``denoise/``) is one file that declares its settings as a pydantic params
class and registers itself: ``@register_model("mf", MFParams)`` / ``@register_denoise("tce", TCEParams)``.
The first lookup imports every module of the registry's packages (:func:`pkgutil.iter_modules`), so there is
no import list to keep: a new file is found by being there.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from .errors import ConfigError
from .params import DenoiseParams, ModelParams, Params

T = TypeVar("T")


class Registry:
    """Classes of one kind by name, each with its params class; ``packages`` hold the files that register."""

    def __init__(self, kind: str, packages: tuple[str, ...], params_base: type[Params]) -> None:
        self.kind, self.packages, self.params_base = kind, packages, params_base
        self._entries: dict[str, tuple[type, type[Params]]] = {}
        self._loaded = False

    def register(self, name: str, params: type[Params]) -> Callable[[type[T]], type[T]]:
        """Class decorator: make ``cls`` available as ``<kind>.name: <name>`` with settings ``params``."""
        if not (isinstance(params, type) and issubclass(params, self.params_base)):
            raise TypeError(f"{self.kind} {name!r}: params must subclass {self.params_base.__name__}")

        def decorate(cls: type[T]) -> type[T]:
            known = self._entries.get(name)
            if known is not None and known[0].__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = (cls, params)
            return cls

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        for package in self.packages:
            module = importlib.import_module(f".{package}", __package__)
            for info in pkgutil.iter_modules(module.__path__):
                importlib.import_module(f"{module.__name__}.{info.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def _entry(self, name: str) -> tuple[type, type[Params]]:
        if name not in self.names():
            raise ConfigError(f"config key '{self.kind}.name': value {name!r} is not allowed; expected one of "
                              f"{self.names()}")
        return self._entries[name]

    def get(self, name: str) -> type:
        return self._entry(name)[0]

    def params(self, name: str) -> type[Params]:
        return self._entry(name)[1]


MODELS = Registry("model", ("backends", "baselines"), ModelParams)
DENOISE = Registry("denoise", ("denoise",), DenoiseParams)
register_model, model_names, get_model, model_params = MODELS.register, MODELS.names, MODELS.get, MODELS.params
register_denoise, denoise_names, get_denoise, denoise_params = (DENOISE.register, DENOISE.names, DENOISE.get,
                                                                DENOISE.params)
