"""What names a result: the run id covers the validated dials, a fingerprint of the code that computes the study
and a digest of every data file a config reads. Same id, same numbers; change any of them and the id changes, so
a stored result is never returned for code or data that did not make it.

The code fingerprint is the sha256 of the source of the study's module and of every module of the package it
imports, followed through their imports (found by reading the source, not by importing). Storage, the dashboard,
the CLI and the report (`runs/`, `viz/`, `cli.py`, `reproduce.py`) do not compute results and are left out, so a
change to a page does not orphan the runs behind it. A study defined outside the package (a user's module or a
notebook cell) is fingerprinted by its own module's source (or the class's, where there is no file) and the
package's computing core.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import sys
from pathlib import Path

PACKAGE = "workbench"
ROOT = Path(__file__).resolve().parents[1]  # the package's folder
#: modules that present or store results but compute none (not part of any fingerprint)
PRESENTATION = ("workbench.runs", "workbench.viz", "workbench.cli", "workbench.reproduce", "workbench.__main__")
#: what a study defined outside the package computes with
CORE = ("workbench.engine", "workbench.noise", "workbench.probes", "workbench.models", "workbench.datasets",
        "workbench.studies.base", "workbench.errors")


def _file(module: str) -> Path | None:
    """The source file of a module of the package (a package's __init__.py), or None."""
    if not (module == PACKAGE or module.startswith(PACKAGE + ".")):
        return None
    parts = module.split(".")[1:]
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _excluded(module: str) -> bool:
    return module == PACKAGE or any(module == p or module.startswith(p + ".") for p in PRESENTATION)


@functools.lru_cache(maxsize=512)
def _imports(path: str, mtime_ns: int) -> tuple[str, ...]:
    """The package modules a source file imports (absolute names), read from its syntax tree."""
    file = Path(path)
    rel = file.relative_to(ROOT).with_suffix("")
    package = [PACKAGE, *rel.parts][:-1]  # what a relative import starts from (a package's own, for __init__)
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append(origin)
            found += [f"{origin}.{a.name}" for a in node.names]  # `from .. import datasets`: a module
    return tuple(m for m in dict.fromkeys(found) if _file(m) is not None)


def _closure(start: list[str]) -> list[Path]:
    """The files of `start` and of every package module they import, transitively (presentation left out)."""
    seen: dict[str, Path] = {}
    todo = [m for m in start if not _excluded(m)]
    while todo:
        module = todo.pop()
        file = _file(module)
        if module in seen or file is None or _excluded(module):
            continue
        seen[module] = file
        todo += [m for m in _imports(str(file), file.stat().st_mtime_ns) if m not in seen]
    return sorted(set(seen.values()))


def _digest_files(files: list[Path]) -> str:
    """The sha256 of the files' names and contents (read again only when a file's size or mtime changed: the run
    browser asks for every row it lists)."""
    return _digest_stamped(tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))


@functools.lru_cache(maxsize=64)
def _digest_stamped(stamped: tuple) -> str:
    h = hashlib.sha256()
    for path, _, _ in stamped:
        f = Path(path)
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def code_fingerprint(cls) -> str:
    """16 hex digits naming the source that computes study `cls`."""
    module = cls.__module__
    if _file(module) is not None:
        return _digest_files(_closure([module]))[:16]
    h = hashlib.sha256(_digest_files(_closure(list(CORE))).encode())
    mod = sys.modules.get(module)
    source_file = getattr(mod, "__file__", None)
    if source_file and Path(source_file).is_file():
        h.update(Path(source_file).read_bytes())
    else:  # a notebook cell: the class's own source where Python can find it, else its declared version
        try:
            h.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):
            h.update(repr(getattr(cls, "version", cls.__qualname__)).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def data_digests(study) -> dict[str, str]:
    """{path: sha256 of its contents (16 hex)} for every data file the config reads (Study.data_files), and the
    digests of the other data it reads (Study.data_contents: a user's data set, converted)."""
    out = {}
    for path in study.data_files():
        p = Path(str(path)).expanduser()
        st = p.stat()
        out[str(path)] = _file_digest(str(p.resolve()), st.st_mtime_ns, st.st_size)
    out.update(study.data_contents())
    return out


def user_code(studies) -> dict[str, str]:
    """{import path: digest of its source} of the user's own code the configs run (Study.user_code: a model
    factory, a data set's loader)."""
    from ..plugins import source_digest

    return {path: source_digest(path, dial) for s in studies for dial, path in s.user_code().items()}


def with_user_code(code: str, user: dict[str, str]) -> str:
    """The code fingerprint extended by the user's code it runs (unchanged where there is none, so the ids of
    runs of the package's own models stay as they were)."""
    if not user:
        return code
    return hashlib.sha256(json.dumps([code, user], sort_keys=True).encode()).hexdigest()[:16]


def identity(study) -> dict:
    """What a config's results depend on besides its dials: {"code": fingerprint (with the source of any model
    factory or data loader of the user's that it runs), "data": {path: digest}}."""
    return {"code": with_user_code(code_fingerprint(type(study)), user_code([study])), "data": data_digests(study)}


def make_id(kind: dict, ident: dict) -> str:
    """sha256 of the canonical JSON of what is computed (study and dials, or a sweep's plan) and its identity,
    first 12 hex digits."""
    blob = json.dumps({**kind, **ident}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
