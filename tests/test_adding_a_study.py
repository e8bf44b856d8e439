"""docs/adding-a-study.md: its worked example, taken as it stands, is a study like any other."""
import importlib
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import workbench as wb
from workbench import notebooks
from workbench.cli import ensure_kernel, main
from workbench.studies import get as get_study

from .test_protocol import _same, _train

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-study.md"


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The doc's example module, importable from tmp_path; unregistered afterwards."""
    match = re.search(r"```python\n# file: (\w+)\.py\n(.*?)```", DOC.read_text(), re.S)
    assert match, "the doc's worked example (a python block starting '# file: NAME.py')"
    name, source = match.group(1), match.group(2)
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))  # for the notebook's kernel
    sys.modules.pop(name, None)
    mod = importlib.import_module(name)
    yield mod.NoisyRegression, tmp_path
    mod.NoisyRegression._checked = False
    sys.modules.pop(name, None)


def test_the_worked_example_satisfies_the_protocol(example):
    cls, _ = example
    assert "noisy_regression" in wb.studies()
    configs = [cls.configure(**cls.tiny, seed=1), cls.configure(**cls.tiny, seed=2, input_noise=2.0)]
    group, ctx = _train(cls, configs)
    assert {k for r in ctx.records for k in r} == {"step", *cls.record_metrics()}  # the loop added "step"
    for m, cfg in enumerate(configs):
        alone, _ = _train(cls, [cfg])
        assert all(_same(group[v].isel(model=m).values, alone[v].isel(model=0).values) for v in alone.data_vars)
    assert cls.curves == {"Loss": ["train_loss", "test_loss"], "Weights": ["weight_norm"]}


def test_the_worked_example_shows_its_finding(example, tmp_path):
    """Bishop 1995: more input noise, smaller weights (a ridge penalty σ²), over seeds."""
    store = wb.Store(tmp_path / "data")
    sweep = wb.sweep("noisy_regression", grid={"input_noise": [0.0, 1.0]}, seeds=[0, 1, 2], steps=300,
                     store=store, progress=False)
    norm = sweep.ds.weight_norm.isel(step=-1)
    assert (norm.sel(input_noise=1.0) < norm.sel(input_noise=0.0)).all(), norm.values


def test_the_worked_example_runs_from_the_cli_the_notebook_and_the_dashboard(example, data_root, capsys):
    cls, folder = example
    assert main(["run", "noisy_regression", "--steps", "20", "--input-noise", "0.3", "--quiet"]) == 0
    assert main(["run", "noisy_regression", "--input-noise", "30"]) == 2  # a bad dial, named
    assert "input_noise" in capsys.readouterr().err
    written = notebooks.sync(folder / "notebooks")
    assert "noisy_regression: new notebook noisy_regression.ipynb" in written
    import papermill as pm

    out = folder / "executed.ipynb"
    pm.execute_notebook(str(folder / "notebooks" / "noisy_regression.ipynb"), str(out),
                        kernel_name=ensure_kernel("workbench"), parameters={"steps": 30, "eval_every": 10},
                        progress_bar=False, execution_timeout=300, cwd=str(folder))
    text = "\n".join(str(o.get("text", "")) for c in nbformat.read(out, as_version=4).cells
                     for o in c.get("outputs", []))
    assert re.search(r"test_loss\s+final [\d.e+-]+\s+best [\d.e+-]+ at \d+", text), text
    assert notebooks.sync(folder / "notebooks") == []  # up to date: nothing rewritten
    from workbench.viz.page import StudyPage

    page = StudyPage("noisy_regression")
    page.panel()
    assert set(page.dials) == set(cls.dials())
    assert np.isfinite(wb.run("noisy_regression", **cls.tiny, progress=False).ds.test_loss.values).all()
    assert get_study("noisy_regression") is cls
