"""What a user brings: their own model factory or data set named by an import path ("mypkg.nets:make_net"), and
their own studies (a `workbench.studies` entry point, or a Study subclass defined anywhere).

An import path names a module and an attribute in it, `module:attr` (dotted on both sides). `__main__:name` names
something defined in the running script or notebook. The source of what it names is part of the run id (see
runs/identity.py), so changing a factory never returns results computed with the old one.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
from pathlib import Path

import param

from .errors import ConfigError

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(value) -> bool:
    return isinstance(value, str) and bool(_PATH.match(value))


class Choice(param.Selector):
    """A selector dial that also takes an import path `module:attr` naming a user's own factory: its built-in
    choices are `objects`; the widget lets a user type a path."""

    __slots__ = ["what"]

    def __init__(self, default=None, *, objects=None, what: str = "a factory", **kw):
        self.what = what  # what the import path must name, in words (error messages, the schema)
        super().__init__(default=default, objects=objects, **kw)

    def _validate_value(self, value, allow_None=None):
        if is_import_path(value):
            return
        super()._validate_value(value, allow_None)


def resolve(path: str, field: str, what: str = "a callable", need_callable: bool = True):
    """The object an import path names; ConfigError naming the field when the module or attribute is missing or the
    module fails to import."""
    if not is_import_path(path):
        raise ConfigError(field, path, f"an import path module:attribute naming {what} (e.g. mypkg.nets:make_net)")
    module_name, attr = path.split(":", 1)
    try:
        obj = sys.modules[module_name] if module_name == "__main__" else _fresh(importlib.import_module(module_name))
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(field, path, f"an importable module: {module_name!r} is not found on the Python path "
                                           f"(install it, or start from its folder)") from None
        raise ConfigError(field, path, f"a module that imports ({type(e).__name__}: {e})") from None
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(field, path, f"a module that imports ({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(field, path, f"{what}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if need_callable and not callable(obj):
        raise ConfigError(field, path, f"{what} (got {type(obj).__name__})")
    return obj


_LOADED: dict[str, tuple[int, int]] = {}  # module name -> (mtime_ns, size) of its file when last (re)loaded


def _fresh(module):
    """The module as its file now reads: one whose file changed since it was first resolved here is reloaded, so
    the code that runs is the code whose source the run id digests (an edited model file in a running notebook)."""
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return module
    st = Path(file).stat()
    stamp = (st.st_mtime_ns, st.st_size)
    seen = _LOADED.setdefault(module.__name__, stamp)
    if seen != stamp:
        module = importlib.reload(module)
        _LOADED[module.__name__] = stamp
    return module


def call_with(fn, field: str, path: str, **available):
    """Call `fn` with the keyword arguments it takes out of `available` (all of them if it takes **kwargs); a
    required parameter that is not available is an error naming what is."""
    sig = inspect.signature(fn)
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return fn(**available)
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in available]
    if missing:
        raise ConfigError(field, path, f"a callable whose required parameters are among {', '.join(available)} "
                                       f"(it also needs {', '.join(missing)})")
    return fn(**{p.name: available[p.name] for p in params if p.name in available})


def source_digest(path: str, field: str) -> str:
    """16 hex digits of the source behind an import path: its module's file, or (a notebook cell, which has no file)
    the object's own source. An object whose source Python cannot find is refused: its results could not be told
    apart from those of a changed version."""
    obj = resolve(path, field, "an object", need_callable=False)
    module = sys.modules.get(path.split(":", 1)[0])
    file = getattr(module, "__file__", None)
    h = hashlib.sha256(path.encode() + b"\0")
    if file and Path(file).is_file():
        h.update(Path(file).read_bytes())
    else:
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            raise ConfigError(field, path, "an object defined in a module file or a notebook cell (its source is "
                                           "part of the run id; Python cannot find this one's)") from None
    return h.hexdigest()[:16]
