"""Sweeps: ensembles equal models trained alone, bad grids are refused, a killed sweep resumes, Dask equals local."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

import workbench as wb
from workbench.engine.events import PartStored, Recorded
from workbench.errors import ConfigError

from .conftest import optimizer_steps

SMALL = dict(epochs=4, n_train=300)


@pytest.mark.parametrize("fixed, grid", [
    (dict(width=32, optimizer="adam", loss="ce"), {"flip_rate": [0.0, 0.4], "lr": [1e-3, 3e-3]}),
    (dict(width=16, optimizer="sgd", lr=0.05), {"momentum": [0.0, 0.9], "weight_decay": [0.0, 1e-3]}),
    (dict(width=16, loss="gce"), {"gce_q": [0.3, 0.9], "noise_kind": ["symmetric", "pair"]}),
    (dict(width=16, loss="elr"), {"elr_lambda": [1.0, 3.0], "elr_beta": [0.5, 0.9]}),
])
def test_an_ensemble_equals_each_model_trained_alone(store, fixed, grid):
    sweep = wb.sweep("label_noise", grid=grid, seeds=[0, 1], store=store, progress=False, **SMALL, **fixed)
    assert sweep.status == "done"
    (a, va), (b, vb) = grid.items()
    assert sweep.ds["test_acc"].dims == (a, b, "seed", "epoch")
    for x in va:
        for y in vb:
            for seed in (0, 1):
                alone = wb.run("label_noise", seed=seed, store=store, progress=False, **{a: x, b: y}, **SMALL,
                               **fixed).ds
                cell = sweep.ds.sel({a: x, b: y, "seed": seed})
                for m in ("train_loss", "test_acc", "memorized", "ece"):
                    np.testing.assert_allclose(cell[m].values, alone[m].values, rtol=1e-5, atol=1e-6, err_msg=m)
                np.testing.assert_allclose(cell["example_loss"].values, alone["example_loss"].values, rtol=1e-4,
                                           atol=1e-5)
                assert np.array_equal(cell["flipped"].values, alone["flipped"].values)


def test_shape_changing_dials_split_the_grid_into_tasks(store):
    from workbench.runs.sweep import plan, tasks

    cls, cells, config, _ = plan("label_noise", {"flip_rate": [0.0, 0.2, 0.4], "width": [16, 32]}, [0, 1, 2],
                                 SMALL)
    jobs = tasks(cls, cells, "cpu")
    assert len(cells) == 18 and len(jobs) == 2 and sorted(len(j) for j in jobs) == [9, 9]
    assert all(len({c.width for c in job}) == 1 for job in jobs)


def test_the_cells_of_one_training_share_a_task_and_train_once(store):
    """A sweep over sampling dials (eta × sampling steps) trains one denoiser per seed, in one task per seed when
    a task holds fewer cells than the grid; each cell equals its config run alone."""
    from workbench.runs.sweep import plan, tasks
    from workbench.studies import get

    tiny = {**get("diffusion").tiny, "sampler": "ddim"}
    grid = {"eta": [0.0, 1.0], "sample_steps": [2, 4]}
    dials = {k: v for k, v in tiny.items() if k not in grid}
    cls, cells, *_ = plan("diffusion", grid, [0, 1], dials)
    per_cell = cells[0].model_bytes()
    jobs = tasks(cls, cells, "cpu", budget=5 * per_cell)  # five cells a task: a seed's four stay together
    assert sorted(len(j) for j in jobs) == [4, 4]
    assert all(len({c.seed for c in job}) == 1 for job in jobs)
    with optimizer_steps() as steps:
        sweep = wb.sweep("diffusion", grid=grid, seeds=[0, 1], store=store, progress=False, **dials)
    assert sweep.status == "done"
    assert len(steps) == 2 * tiny["steps"]  # two trainings (the seeds), not eight
    for eta in grid["eta"]:
        for n in grid["sample_steps"]:
            alone = wb.run("diffusion", seed=1, eta=eta, sample_steps=n, store=store, progress=False, **dials).ds
            cell = sweep.ds.sel(eta=eta, sample_steps=n, seed=1)
            # sw_vs_steps is drawn once for both sampling steps: the same η
            for v in ("train_loss", "sw", "mmd", "samples", "sw_vs_steps"):
                np.testing.assert_allclose(cell[v].values, alone[v].values, rtol=1e-5, atol=1e-6, err_msg=v)


@pytest.mark.parametrize("grid, seeds, words", [
    ({"flip_rat": [0.1]}, [0], "grid='flip_rat'"),
    ({"flip_rate": [0.1, 1.5]}, [0], "flip_rate=1.5"),
    ({"flip_rate": []}, [0], "non-empty list"),
    ({"flip_rate": [0.1, 0.1]}, [0], "distinct values"),
    ({"seed": [0, 1]}, [0], "seeds=[...]"),
    ({"width": [16, 0]}, [0], "width=0"),
    ({}, [0], "at least one dial"),
    ({"flip_rate": [0.1]}, [], "seeds"),
    ({"flip_rate": 0.1}, [0], "a list of values"),
])
def test_a_bad_grid_is_refused_before_any_work(store, grid, seeds, words):
    with pytest.raises(ConfigError) as e:
        wb.sweep("label_noise", grid=grid, seeds=seeds, store=store, progress=False, **SMALL)
    assert words in str(e.value)
    assert store.list() == [] and not (store.root / "sweeps").exists()


def test_divergence_in_one_cell_does_not_stop_the_others(store):
    sweep = wb.sweep("label_noise", grid={"lr": [0.01, 10.0]}, seeds=[0], store=store, progress=False,
                     dataset="blobs", optimizer="sgd", momentum=0.99, depth=4, epochs=10, n_train=300)
    steps = sweep.ds["diverged_step"].sel(seed=0)
    assert int(steps.sel(lr=0.01)) == -1 and int(steps.sel(lr=10.0)) > 0
    assert np.isfinite(sweep.ds["test_acc"].sel(lr=0.01, seed=0).values).all()
    assert sweep.status == "done"


def test_phase_diagram_cells_are_means_over_seeds(store):
    sweep = wb.sweep("label_noise", grid={"flip_rate": [0.0, 0.5], "width": [16, 32]}, seeds=[0, 1, 2],
                     store=store, progress=False, **SMALL)
    table = wb.viz.cell_table(sweep.ds, "test_acc", x="flip_rate", y="width", epoch="final")
    row = table[(table.flip_rate == 0.5) & (table.width == 32)].iloc[0]
    final = sweep.ds["test_acc"].sel(flip_rate=0.5, width=32).isel(epoch=-1).values
    assert row["n"] == 3 and np.isclose(row["mean"], final.mean()) and np.isclose(row["std"], final.std(ddof=1))
    drop = wb.viz.cell_table(sweep.ds, "test_acc", "flip_rate", "width", epoch="peak_minus_final")
    assert (drop["mean"] >= 0).all()
    import holoviews as hv

    hv.render(wb.viz.phase_diagram(sweep.ds, "test_acc", x="flip_rate", y="width"), backend="bokeh")
    assert wb.load(sweep.id, store=store).ds["test_acc"].equals(sweep.ds["test_acc"])
    with pytest.raises(ValueError, match="x='lr'"):
        wb.viz.cell_table(sweep.ds, "test_acc", x="lr", y="width")


SCRIPT = textwrap.dedent("""
    import workbench as wb
    wb.sweep("label_noise", grid={"width": [8, 16, 24, 32, 40, 48]}, seeds=[0, 1], epochs=40, n_train=600,
             progress=False)
""")


def test_a_killed_sweep_resumes_and_equals_an_uninterrupted_one(data_root, tmp_path):
    grid, kw = {"width": [8, 16, 24, 32, 40, 48]}, dict(seeds=[0, 1], epochs=40, n_train=600, progress=False)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env={**os.environ, "WORKBENCH_DATA": str(data_root)})
    parts = data_root / "sweeps" / "label_noise"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*/part-*.nc"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("*/part-*.nc")))
    assert 2 <= done_before < 6, "the sweep was killed part way"
    events = []
    resumed = wb.sweep("label_noise", grid=grid, store=wb.Store(data_root), sinks=[events.append], **kw)
    stored = [e for e in events if isinstance(e, PartStored)]
    trained = {e.task for e in events if isinstance(e, Recorded)}
    assert len(stored) == 6 and len(trained) == 6 - done_before  # only the missing tasks were computed
    fresh = wb.sweep("label_noise", grid=grid, store=wb.Store(tmp_path / "fresh"), **kw)
    xr.testing.assert_identical(resumed.ds.drop_attrs(), fresh.ds.drop_attrs())
    assert not (data_root / "sweeps" / "label_noise" / resumed.id).exists()  # parts folded in, temp files gone


def test_a_sweep_on_a_dask_local_cluster_equals_the_local_one(store, tmp_path):
    from distributed import Client, LocalCluster

    grid = {"flip_rate": [0.0, 0.4], "width": [16, 32]}
    local = wb.sweep("label_noise", grid=grid, seeds=[0, 1], store=store, progress=False, **SMALL)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = wb.sweep("label_noise", grid=grid, seeds=[0, 1], store=wb.Store(tmp_path / "dask"),
                          executor="dask", client=client, progress=False, **SMALL)
    assert remote.status == "done"
    xr.testing.assert_allclose(local.ds.drop_attrs(), remote.ds.drop_attrs(), rtol=1e-5, atol=1e-6)
