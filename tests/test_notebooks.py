"""The parameterised notebooks: their parameters cell mirrors the study's dials; papermill runs them."""
import ast
from pathlib import Path

import nbformat
import workbench as wb
import pytest

from workbench.cli import ensure_kernel, main
from workbench.notebooks import OWN, own_parameters, parameters_source, sync
from workbench.studies import get, names

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("study", names())
def test_parameters_cell_mirrors_the_dials(study):
    nb = nbformat.read(NOTEBOOKS / f"{get(study).notebook_name()}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    dials, _, own = cells[0].source.partition(OWN)
    assigned = {t.id: ast.literal_eval(n.value) for n in ast.parse(dials).body
                for t in n.targets if isinstance(n, ast.Assign)}
    assert assigned == get(study).defaults()
    mine = {t.id for n in ast.parse(own).body for t in n.targets if isinstance(n, ast.Assign)}
    assert not mine & set(assigned), "a notebook's own parameter shadows a dial"
    assert nb.metadata["kernelspec"]["name"] and nb.metadata["language_info"]["name"] == "python"


def test_papermill_runs_the_label_noise_notebook(data_root, tmp_path):
    import papermill as pm

    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / "label_noise.ipynb"), str(out), kernel_name=ensure_kernel("workbench"),
                        parameters={"flip_rate": 0.4, "epochs": 4, "width": 32, "n_train": 300},
                        progress_bar=False, execution_timeout=300, cwd=str(NOTEBOOKS))
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "status done" in text and "clean test accuracy peaks" in text
    html = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.holoviews_exec.v0+json" in
            o.get("data", {}) or "text/html" in o.get("data", {})]
    assert html, "the figures were rendered"
    runs = list((data_root / "runs" / "label_noise").glob("*.nc"))
    assert len(runs) == 1  # the notebook's run landed in the store


def test_cli_notebook_run_lands_in_reports_and_refuses_bad_parameters(data_root, capsys):
    assert main(["notebook", "run", "label_noise", "-p", "flip_rate", "7"]) == 2
    assert "flip_rate=7.0" in capsys.readouterr().err
    assert not (data_root / "reports").exists()
    assert main(["notebook", "run", "label_noise", "-p", "epochs", "2", "-p", "width", "16", "-p", "n_train",
                 "300", "--quiet"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out.parent == data_root / "reports" and out.is_file()


def _execute(name, tmp_path, parameters):
    import papermill as pm

    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), kernel_name=ensure_kernel("workbench"),
                        parameters=parameters, progress_bar=False, execution_timeout=300, cwd=str(NOTEBOOKS))
    nb = nbformat.read(out, as_version=4)
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_papermill_runs_the_sgd_noise_notebook(data_root, tmp_path):
    text = _execute("sgd_noise", tmp_path, {"steps": 100, "eval_every": 50, "n_train": 64, "width": 16})
    assert "status done" in text and "final test error" in text


@pytest.mark.parametrize("study, preset, grid, x", [
    ("sgd_noise", "phase_diagram", {"alpha": [0.1, 10.0], "temperature": [1e-3, 1e-2]}, "temperature"),
    ("label_noise", "early_learning", {"flip_rate": [0.0, 0.4], "width": [16, 32]}, "flip_rate"),
])
def test_papermill_runs_the_phase_diagrams_notebook_on_a_tiny_grid(data_root, tmp_path, study, preset, grid, x):
    dials = {"steps": 100, "eval_every": 50, "n_train": 64} if study == "sgd_noise" else {"epochs": 3, "n_train": 300}
    text = _execute("phase_diagrams", tmp_path, {"study": study, "preset": preset, "grid": grid, "seeds": [0, 1],
                                                 "dials": dials})
    assert "Sweep(" in text and "status='done'" in text and "HeatMap" in text and "exponent" in text
    assert x in text


def test_papermill_runs_the_precision_notebook(data_root, tmp_path):
    """The notebook's own parameters (its sweeps' grids and seeds) are papermill's to set, as the dials are."""
    text = _execute("precision", tmp_path, {"epochs": 2, "eval_every": 1, "width": 32, "n_train": 300, "seeds": [0],
                                            "compare_formats": ["fp32", "fp8_e4m3", "fp4_e2m1"],
                                            "map_lrs": [0.001, 0.1], "exp_bits_grid": [2, 4],
                                            "man_bits_grid": [1, 3], "lab_n": 4096})
    assert "status done" in text or "Run(" in text
    assert "HeatMap" in text and "output MSE with dither" in text
    formats = ["fp32", "fp8_e4m3", "fp4_e2m1"]
    swept = [(r["params"]["grid"], r["params"]["seeds"]) for r in wb.Store(data_root).list("precision", kind="sweep")]
    asked = [({"precision": formats}, [0]), ({"precision": formats, "lr": [0.001, 0.1]}, [0]),
             ({"exp_bits": [2, 4], "man_bits": [1, 3]}, [0])]
    assert len(swept) == 3 and all(a in swept for a in asked), swept  # the grids and seeds given, not its own


def test_sync_keeps_a_notebooks_own_parameters_below_the_dials(tmp_path):
    nb = nbformat.read(NOTEBOOKS / "precision.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    own = own_parameters(cell.source)
    assert "compare_formats = " in own and "lr = " not in own
    cell.source = cell.source.replace("lr = 0.001\n", "lr = 0.5\n")  # a stale dial default
    folder = tmp_path / "nb"
    folder.mkdir()
    nbformat.write(nb, folder / "precision.ipynb")
    assert "precision: parameters cell updated" in sync(folder)
    synced = next(c for c in nbformat.read(folder / "precision.ipynb", as_version=4).cells
                  if "parameters" in c.metadata.get("tags", []))
    assert synced.source == parameters_source("precision", own)  # the dials fixed, its own parameters kept


def test_papermill_runs_the_grokking_notebook(data_root, tmp_path):
    text = _execute("grokking", tmp_path, {"p": 11, "epochs": 20, "eval_every": 10, "width": 32})
    assert "final test accuracy" in text and "softmax collapse" in text
    assert "HeatMap" in text


def test_papermill_runs_the_spectra_notebook(data_root, tmp_path):
    text = _execute("spectra", tmp_path, {"steps": 60, "sharpness_every": 20, "n_train": 200, "width": 32})
    assert "sharpness" in text and "over the second half" in text and "Layout" in text


def test_papermill_runs_the_diffusion_notebook(data_root, tmp_path):
    text = _execute("diffusion", tmp_path, {"steps": 50, "eval_every": 25, "n_samples": 200, "width": 32})
    assert "sliced Wasserstein" in text and "status done" in text


def test_papermill_runs_the_masked_diffusion_notebook(data_root, tmp_path):
    text = _execute("masked_diffusion", tmp_path, {"steps": 20, "eval_every": 10, "n_train": 200, "n_samples": 64,
                                                   "width": 32, "sample_steps": 64, "seeds": [0],
                                                   "compare_uniforms": ["float64", "float16"]})
    assert "status='done'" in text and "held-out images: entropy per pixel" in text
    assert "float16   samples: entropy per pixel" in text and "float32   samples" not in text  # the types asked for


def test_the_tour_runs_every_study_at_a_small_scale(data_root, tmp_path):
    text = _execute("tour", tmp_path, {"scale": 0.05, "seeds": [0]})
    for line in ("studies: diffusion", "clean test acc: best", "temperature 0.001: test error", "2/η = 10",
                 "⊥Grad AdamW", "fp8_e4m3  done", "sliced Wasserstein", "tail exponent α by epoch",
                 "residual MLP: clean test acc best", "best lr by Optuna:",
                 ":NdOverlay   [flip_rate]"):  # the hvplot of sweep.ds: a curve per flip rate
        assert line in text
    stored = {p.parent.name for p in (data_root / "runs").glob("*/*.nc")}
    assert set(wb.studies()) <= stored  # every study ran and landed in the store
