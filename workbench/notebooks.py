"""The study notebooks in notebooks/: each study's parameterised notebook (papermill) is derived from its class.

`sync` rewrites every notebook's `parameters` cell from the study's dials (keeping the notebook's own parameters
below them) and writes a notebook for any study that has none yet (a new study is one file: its notebook follows
from it). Cell ids are stable (a hash of the study and the cell's place), so a regenerated notebook differs from the
committed one only where the study changed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .studies import get as get_study, names as study_names


#: the line of a `parameters` cell after which a notebook keeps parameters of its own (a sweep's grid, its seeds):
#: `sync` rewrites the dials above it and keeps what follows. In the parameters cell, papermill's values, injected
#: after it, override them too (in a later cell they would silently overwrite what papermill was given).
OWN = "# This notebook's own parameters (papermill overrides these too; they are not dials of the study)"


def parameters_source(study: str, own: str = "") -> str:
    """The `parameters` cell of a study's notebook: every dial at its default, its doc above it; then the
    notebook's own parameters, if it has any."""
    cls = get_study(study)
    lines = [f"# Dials of the {study} study (papermill overrides these). The same names as the CLI options and the "
             "app's widgets."]
    for name, par in cls.dials().items():
        lines += [f"# {par.doc}", f"{name} = {par.default!r}"]
    if own.strip():
        lines += [OWN, own.strip("\n")]
    return "\n".join(lines)


def own_parameters(source: str) -> str:
    """The part of a `parameters` cell that is the notebook's own (below the OWN line), or ''."""
    _, sep, own = source.partition(OWN + "\n")
    return own if sep else ""


def _cell_id(study: str, i: int) -> str:
    return hashlib.sha256(f"{study}:{i}".encode()).hexdigest()[:8]


def study_notebook(study: str):
    """A new notebook for a study: what it asks, its dials, one run, its curves, its summary."""
    import nbformat.v4 as nbf

    cls = get_study(study)
    setup = ["import workbench as wb", "from workbench.studies import get as get_study"]
    if not cls.__module__.startswith("workbench."):  # a study of the user's own package: import it first
        setup.insert(0, f"import {cls.__module__}  # defines the {study!r} study")
    metric = cls.headline
    cells = [
        nbf.new_markdown_cell(f"# {cls.title or study}\n\n{cls.question}\n\n{cls.paper}".strip()),
        nbf.new_code_cell(parameters_source(study), metadata={"tags": ["parameters"]}),
        nbf.new_code_cell("\n".join(setup + [
            "",
            f"dials = {{name: globals()[name] for name in get_study({study!r}).dials()}}",
            f"run = wb.run({study!r}, **dials)",
            "run"])),
        nbf.new_markdown_cell("## Curves\nEvery declared metric over the run, by panel; the best "
                              f"{cls.label(metric)} is marked."),
        nbf.new_code_cell("wb.viz.curves(run)"),
        nbf.new_markdown_cell("## Summary\nThe final and best value of each metric (best in its declared direction)."),
        nbf.new_code_cell("for name, s in run.summary().items():\n"
                          "    print(f\"{name:28s} final {s['final']:.4g}  best {s['best']:.4g} at {s['best_at']}\")"),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = _cell_id(study, i)
    nb = nbf.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "workbench", "display_name": "Python (workbench)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def sync(folder: Path) -> list[str]:
    """Bring every study's notebook in `folder` up to date with its dials; write the missing ones. Returns what it
    did, one line a notebook changed."""
    import nbformat

    from .errors import ConfigError

    done = []
    for key in study_names():
        path = folder / f"{get_study(key).notebook_name()}.ipynb"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(study_notebook(key), path)
            done.append(f"{key}: new notebook {path.name}")
            continue
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ConfigError("notebook", str(path), "exactly one cell tagged 'parameters'")
        new = parameters_source(key, own_parameters(cells[0].source))
        if cells[0].source != new:
            cells[0].source = new
            nbformat.write(nb, path)
            done.append(f"{key}: parameters cell updated")
    return done
