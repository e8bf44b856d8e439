"""Studies: every module in this package that defines a Study subclass with a `key` is found here."""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError
from .base import Study

_REGISTRY: dict[str, type[Study]] = {}


def _discover() -> dict[str, type[Study]]:
    if not _REGISTRY:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")
        for cls in _all_subclasses(Study):
            if cls.key:
                _REGISTRY[cls.key] = cls
    return _REGISTRY


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def names() -> list[str]:
    return sorted(_discover())


def get(name: str) -> type[Study]:
    reg = _discover()
    if name not in reg:
        raise ConfigError("study", name, f"one of {', '.join(sorted(reg))}")
    return reg[name]


__all__ = ["Study", "names", "get"]
