"""Studies: every module in this package that defines a Study subclass with a `key` is found here, and so is a
study of another package that declares it as a `workbench.studies` entry point, or one defined anywhere else (a
script, a notebook cell) once its class is defined."""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

from ..errors import ConfigError
from .base import Study

_REGISTRY: dict[str, type[Study]] = {}
ENTRY_POINTS = "workbench.studies"
#: the entry points that could not be loaded: {name: why} (`workbench list` shows them)
broken: dict[str, str] = {}


def _load_entry_points() -> None:
    """Import what each `workbench.studies` entry point names (a module defining Study subclasses, or a Study
    class): an installed package adds studies without editing this one. One that fails to load is reported, not
    fatal: the other studies stay usable."""
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - whatever a third-party module raises on import
            broken[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"
            warnings.warn(f"the study plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                          stacklevel=3)
            continue
        if isinstance(obj, type) and not (issubclass(obj, Study) and obj.__dict__.get("_checked")):
            broken[ep.name] = f"{ep.value}: not a Study subclass with a key"
            warnings.warn(f"the study plugin {ep.name!r} ({ep.value}) names {obj.__name__}, which is not a Study "
                          "subclass with a key", stacklevel=3)


def _discover() -> dict[str, type[Study]]:
    """Every Study subclass with a key: the package's modules and the entry points are imported once; subclasses
    are looked up on every call, so a user's own study (a notebook cell, a script) is found whenever it has been
    defined. A later definition of the same key (a re-run cell) replaces the earlier one."""
    if not _REGISTRY:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")
        _load_entry_points()
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
