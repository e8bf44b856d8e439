"""Runs: ids, caching, statuses (done, diverged, cancelled, failed), determinism, the store."""
import json
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
from workbench.errors import RunNotFound

from .conftest import FAST


def test_run_returns_a_dataset_with_every_metric(store):
    run = wb.run("label_noise", flip_rate=0.4, store=store, progress=False, **FAST)
    assert run.status == "done" and len(run.id) == 12
    ds = run.ds
    assert isinstance(ds, xr.Dataset)
    assert list(ds.epoch.values) == [0, 1, 2, 3]
    for m in ("train_loss", "test_acc", "train_clean_acc", "memorized", "ece", "test_loss"):
        assert ds[m].dims == ("epoch",) and np.isfinite(ds[m].values).all()
    assert ds["example_loss"].dims == ("snapshot", "example") and ds.sizes["example"] == 300
    assert abs(ds["flipped"].values.mean() - 0.4) < 0.1
    assert np.array_equal(ds["flipped"].values, ds["noisy_label"].values != ds["true_label"].values)
    attrs = ds.attrs
    assert json.loads(attrs["config"])["flip_rate"] == 0.4
    assert attrs["device"] == "cpu" and attrs["wall_s"] > 0 and "torch" in json.loads(attrs["versions"])
    row = store.get(run.id)
    assert row["status"] == "done" and row["study"] == "label_noise" and row["params"]["width"] == 32


def test_same_config_is_read_back_not_recomputed(store):
    a = wb.run("label_noise", store=store, progress=False, **FAST)
    seen = []
    b = wb.run("label_noise", store=store, progress=False, sinks=[seen.append], **FAST)
    assert b.id == a.id and seen == []  # nothing was trained
    assert b.ds.identical(a.ds)
    c = wb.run("label_noise", store=store, progress=False, force=True, sinks=[seen.append], **FAST)
    assert c.id == a.id and len(seen) == 4
    assert wb.run("label_noise", store=store, progress=False, seed=1, **FAST).id != a.id


def test_cpu_runs_are_bit_for_bit_repeatable(store):
    a = wb.run("label_noise", store=store, progress=False, **FAST)
    b = wb.run("label_noise", store=store, progress=False, force=True, **FAST)
    for v in ("train_loss", "test_acc", "example_loss"):
        assert np.array_equal(a.ds[v].values, b.ds[v].values)


def test_records_have_one_shape_and_reach_every_sink(store):
    seen = []
    wb.run("label_noise", store=store, progress=False, sinks=[seen.append], **FAST)
    assert [r["epoch"] for r in seen] == [0, 1, 2, 3]
    assert len({tuple(sorted(r)) for r in seen}) == 1
    assert seen[-1]["step"] == 3 * 3  # 300 examples, batch 128 -> 3 steps an epoch


def test_divergence_is_a_result_with_its_step(store):
    run = wb.run("label_noise", dataset="blobs", optimizer="sgd", lr=10.0, momentum=0.99, depth=4, store=store,
                 progress=False, epochs=20, n_train=300)
    assert run.status == "diverged"
    assert run.step > 0 and "not finite" in run.error
    assert store.get(run.id)["step"] == run.step
    assert len(run.ds.epoch) >= 1  # the epochs before the divergence are kept
    assert wb.load(run.id, store=store).status == "diverged"


def test_cancel_keeps_the_partial_run(store):
    import threading

    cancel = threading.Event()

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            cancel.set()

    run = wb.run("label_noise", store=store, progress=False, cancel=cancel, sinks=[stop_after_two], epochs=50,
                 width=32, n_train=300)
    assert run.status == "cancelled"
    assert list(run.ds.epoch.values) == [0, 1, 2]
    assert wb.load(run.id, store=store).ds.sizes["epoch"] == 3
    # a cancelled run is not a cached result: asking again recomputes it to the end
    again = wb.run("label_noise", store=store, progress=False, epochs=50, width=32, n_train=300)
    assert again.status == "done" and again.ds.sizes["epoch"] == 51


def test_an_exception_is_a_failed_run_with_its_message(store):
    def broken_sink(rec):
        if rec["epoch"] == 1:
            raise RuntimeError("sink exploded")

    run = wb.run("label_noise", store=store, progress=False, sinks=[broken_sink], **FAST)
    assert run.status == "failed" and "sink exploded" in run.error
    assert store.get(run.id)["error"] == "RuntimeError: sink exploded"


def test_load_errors(store):
    with pytest.raises(wb.ConfigError, match="run_id='../etc'"):
        wb.load("../etc", store=store)
    with pytest.raises(RunNotFound):
        wb.load("0123456789ab", store=store)


SCRIPT = textwrap.dedent("""
    import sys, workbench as wb
    run = wb.run("label_noise", epochs=int(sys.argv[1]), width=32, n_train=300, progress=False)
    print(run.id, flush=True)
""")


def test_a_run_survives_a_process_restart(data_root):
    out = subprocess.run([sys.executable, "-c", SCRIPT, "3"], capture_output=True, text=True, check=True,
                         env={**os.environ, "WORKBENCH_DATA": str(data_root)})
    rid = out.stdout.split()[-1]
    loaded = wb.load(rid, store=wb.Store(data_root))
    assert loaded.status == "done"
    again = wb.run("label_noise", epochs=3, width=32, n_train=300, progress=False, store=wb.Store(data_root),
                   force=True)
    assert again.id == rid
    for v in loaded.ds.data_vars:
        a, b = loaded.ds[v].values, again.ds[v].values
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), v
    assert loaded.ds.attrs["config"] == again.ds.attrs["config"]


def test_a_killed_run_leaves_no_half_written_file(data_root):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "100000"], env={**os.environ,
                            "WORKBENCH_DATA": str(data_root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = list(data_root.rglob("*.nc*")) if data_root.exists() else []
    assert files == []
    assert wb.Store(data_root).list() == []


def test_a_failed_write_keeps_the_stored_result(store, monkeypatch):
    import errno

    from workbench.runs import store as store_module

    first = wb.run("label_noise", store=store, progress=False, **FAST)
    before = first.path.read_bytes()

    def full(fd):  # the disk fills as the new file is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", full)
    with pytest.raises(wb.StoreError, match="the disk is full"):
        wb.run("label_noise", store=store, progress=False, force=True, **FAST)
    assert first.path.read_bytes() == before
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]
    assert store.get(first.id)["status"] == "done"


def test_label_noise_runs_keep_spectra_snapshots(data_root):
    run = wb.run("label_noise", epochs=4, eval_every=1, spectra_every=2, width=32, n_train=300, flip_rate=0.4)
    ds = run.ds
    assert ds.weight_eigenvalues.dims == ("spectrum_snapshot", "weight_eigen")
    assert ds.spectrum_snapshot.values.tolist() == [0, 2, 4]
    alpha = ds.weight_alpha.values
    assert np.isfinite(alpha[[0, 2, 4]]).all() and np.isnan(alpha[[1, 3]]).all()
    assert (ds.feature_effective_rank.dropna("epoch") >= 1).all()
    # the snapshot's effective rank is the formula's, from the stored spectrum
    from workbench.probes import spectra
    assert float(ds.feature_effective_rank[-1]) == pytest.approx(
        spectra.effective_rank(ds.feature_eigenvalues.isel(spectrum_snapshot=-1).values, of="eigen"))


def test_a_catalog_from_an_older_release_gains_the_new_columns_and_keeps_its_rows(data_root):
    import sqlite3

    data_root.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(data_root / "catalog.sqlite")  # the first release's table: no kind, step, device, tags
    con.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, study TEXT NOT NULL, status TEXT NOT NULL, "
                "params TEXT NOT NULL, created TEXT, finished TEXT, wall_s REAL, path TEXT NOT NULL, error TEXT)")
    con.execute("INSERT INTO runs VALUES ('0123456789ab', 'label_noise', 'done', '{}', '', '2026-01-01', 1.0, "
                "'runs/label_noise/0123456789ab.nc', NULL)")
    con.commit()
    con.close()
    store = wb.Store(data_root)
    old = store.get("0123456789ab")
    assert old["study"] == "label_noise" and old["kind"] == "run" and old["tags"] in ("", [])
    wb.run("label_noise", **FAST, store=store)  # a new run is written next to the old row
    assert {r["id"] for r in store.list()} >= {"0123456789ab"} and len(store.list()) == 2
