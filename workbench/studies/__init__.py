"""Studies: every module in this package that defines a Study subclass with a `key` is found here."""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError
from .base import Study

_REGISTRY: dict[str, type[Study]] = {}


def _discover() -> dict[str, type[Study]]:
    """Every Study subclass with a key: the package's modules are imported once; subclasses are looked up on every
    call, so a user's own study (a notebook cell, a script) is found whenever it has been defined. A later
    definition of the same key (a re-run cell) replaces the earlier one."""
    if not _REGISTRY:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")
    found = {}
    for cls in _all_subclasses(Study):
        if cls.__dict__.get("_checked"):  # its own key, declarations checked (a failed definition never counts)
            found[cls.key] = cls
    _REGISTRY.clear()
    _REGISTRY.update(found)
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
