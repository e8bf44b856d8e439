"""What the package declares: every library the code imports is a dependency or in the extra that its feature
names; the core runs without any extra, and each feature whose extra is missing says which one to install."""
import ast
import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: every optional library, blocked in the "core only" environment below
OPTIONAL = {lib.split(">")[0].split("[")[0].replace("-", "_").lower()
            for extra, libs in PYPROJECT["optional-dependencies"].items() if extra not in ("all", "test")
            for lib in libs}


def _name(requirement: str) -> str:
    for sep in "<>=[; ":
        requirement = requirement.split(sep)[0]
    return requirement.replace("_", "-").lower()


def _imports(path: Path) -> set[str]:
    """The top-level names of the absolute imports of a source file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_imported_library_is_declared():
    declared = {_name(r) for r in PYPROJECT["dependencies"]}
    for extra, libs in PYPROJECT["optional-dependencies"].items():
        if extra not in ("all", "test"):
            declared |= {_name(r) for r in libs}
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for path in sorted((REPO / "workbench").rglob("*.py")) + sorted((REPO / "apps").glob("*.py")):
        for mod in _imports(path) - stdlib - {"workbench"}:
            owners = {_name(d) for d in dists.get(mod, [])}
            if mod == "datasets" and path.name == "datasets.py":
                owners = {"datasets"}  # Hugging Face's, imported from workbench/datasets.py by its absolute name
            if not owners:
                missing.setdefault(f"{mod} (no installed distribution provides it)", []).append(path.name)
            elif not owners & declared and not any(o.startswith(("torch", "nvidia")) for o in owners):
                missing.setdefault(f"{mod} ({', '.join(sorted(owners))})", []).append(path.name)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    everything = {_name(r) for r in PYPROJECT["optional-dependencies"]["all"]}
    assert everything == {f"noise-workbench"} and "[dashboard,notebooks,dask,export,tune,data]" in \
        PYPROJECT["optional-dependencies"]["all"][0]
    assert ".[all,test]" in (REPO / "Makefile").read_text()  # make setup installs every extra


SITECUSTOMIZE = """
import importlib.util, os, sys
BLOCK = set(filter(None, os.environ.get("WB_TEST_BLOCK", "").split(",")))
_find = importlib.util.find_spec
def find_spec(name, package=None):
    return None if name.split(".")[0] in BLOCK else _find(name, package)
importlib.util.find_spec = find_spec
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
"""


@pytest.fixture
def core_only(tmp_path):
    """An environment where no optional library can be imported (as after `pip install noise-workbench`)."""
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    blocked = OPTIONAL | {"panel", "holoviews", "bokeh", "distributed", "dask", "papermill", "jupyter_client",
                          "nbformat", "nbconvert", "ipykernel", "optuna", "hvplot", "pyarrow", "zarr", "tensorboard",
                          "mlflow", "datasets"}
    return {**os.environ, "WB_TEST_BLOCK": ",".join(sorted(blocked)), "WORKBENCH_DATA": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "block"), str(REPO)])}


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_core_trains_stores_and_reads_back_without_any_extra(core_only):
    probe = subprocess.run([sys.executable, "-c", "import panel"], capture_output=True, text=True, env=core_only)
    assert probe.returncode != 0  # the blocker holds
    small = ["--epochs", "2", "--width", "16", "--n-train", "200", "--quiet"]
    out = _cli(core_only, "run", "label_noise", *small)
    assert out.returncode == 0, out.stderr
    assert _cli(core_only, "sweep", "label_noise", "--grid", "flip_rate=0,0.2", *small).returncode == 0
    listed = _cli(core_only, "runs")
    assert listed.returncode == 0 and listed.stdout.count("label_noise") == 2, listed.stdout
    code = ("import workbench as wb; r = wb.run('label_noise', epochs=2, width=16, n_train=200, progress=False); "
            "print(r.status, wb.load(r.id).ds.test_acc.size)")
    py = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=core_only, timeout=300)
    assert py.returncode == 0 and py.stdout.split() == ["done", "3"], py.stderr


@pytest.mark.parametrize("args, extra", [
    (["serve"], "dashboard"),
    (["notebook", "run", "label_noise"], "notebooks"),
    (["reproduce"], "notebooks"),
    (["sweep", "label_noise", "--grid", "flip_rate=0,0.2", "--dask"], "dask"),
    (["run", "label_noise", "--scheduler", "tcp://127.0.0.1:9"], "dask"),
    (["cluster"], "dask"),
    (["tune", "label_noise", "--space", "lr", "--trials", "1"], "tune"),
    (["export", "0123456789ab", "--to", "parquet", "out"], "export"),
    (["run", "label_noise", "--dataset", "hf", "--data-path", "somewhere"], "data"),
])
def test_a_feature_whose_extra_is_missing_names_it(core_only, args, extra):
    out = _cli(core_only, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"pip install 'noise-workbench[{extra}]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
