"""Early learning then memorization (Arpit et al. 2017; Liu et al. 2020), checked over several seeds.

Settings from shared/REPRODUCTION-NOTES.md: digits (1,200 train / 597 test), 40% symmetric flips, MLP 64-512-512-10,
Adam lr 1e-3, batch 128, 100 epochs (about 5 s a run on 2 cores).
"""
import numpy as np
import pytest

import workbench as wb

SEEDS = [0, 1, 2]
SETTINGS = dict(dataset="digits", width=512, depth=2, lr=1e-3, batch_size=128, epochs=100, loss_snapshots=3)


def curves(store, seeds, **dials):
    out = []
    for seed in seeds:
        run = wb.run("label_noise", seed=seed, store=store, progress=False, **SETTINGS, **dials)
        assert run.status == "done"
        acc, mem = run.ds.test_acc.values, run.ds.memorized.values
        peak = int(np.argmax(acc))
        out.append(dict(peak=acc[peak], peak_epoch=peak, final=acc[-1], mem_at_peak=mem[peak], mem_final=mem[-1]))
    return {k: np.array([o[k] for o in out]) for k in out[0]}


def fmt(x):
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f} (n={len(x)})"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    store = wb.Store(tmp_path_factory.mktemp("repro"))
    return store, curves(store, SEEDS, flip_rate=0.4, loss="ce")


def test_test_accuracy_peaks_early_then_falls_as_flips_are_memorized(noisy):
    _, ce = noisy
    drop = ce["peak"] - ce["final"]
    assert np.all(drop > 0.1), f"peak {fmt(ce['peak'])}, final {fmt(ce['final'])}"
    assert np.all(ce["peak_epoch"] < 40), f"peak epochs {ce['peak_epoch']}"
    rise = ce["mem_final"] - ce["mem_at_peak"]
    assert np.all(ce["mem_at_peak"] < 0.2) and np.all(rise > 0.5), \
        f"memorized at peak {fmt(ce['mem_at_peak'])}, at the end {fmt(ce['mem_final'])}"


def test_elr_keeps_final_accuracy_clearly_higher(shared_data):
    """The elr claim's sweep (workbench/reproduce.py; 60 epochs), shared with the quick reproduction profile."""
    ds = wb.sweep("label_noise", {"loss": ["ce", "elr"]}, SEEDS, noise_kind="symmetric", dataset="digits", width=512,
                  depth=2, lr=1e-3, batch_size=128, epochs=60, flip_rate=0.4, progress=False).ds
    final, mem = ds.test_acc.isel(epoch=-1), ds.memorized.isel(epoch=-1)
    gain = (final.sel(loss="elr") - final.sel(loss="ce")).values
    assert np.all(gain > 0.1), f"ELR − CE final accuracy {fmt(gain)}"
    assert np.all(mem.sel(loss="elr").values < 0.2), f"ELR memorized {fmt(mem.sel(loss='elr').values)}"


def test_without_flips_there_is_no_drop(tmp_path):
    clean = curves(wb.Store(tmp_path), SEEDS, flip_rate=0.0, loss="ce")
    assert np.all(clean["peak"] - clean["final"] < 0.03), f"peak {fmt(clean['peak'])}, final {fmt(clean['final'])}"


@pytest.mark.slow
def test_gce_resists_memorization_too(noisy):
    store, ce = noisy
    gce = curves(store, SEEDS + [3, 4], flip_rate=0.4, loss="gce")
    assert gce["final"].mean() - ce["final"].mean() > 0.1, f"GCE {fmt(gce['final'])} vs CE {fmt(ce['final'])}"


@pytest.fixture(scope="module")
def double_descent(tmp_path_factory):
    """The double_descent preset's settings on three of its widths (the full preset is the slow test below): the
    double_descent claim's sweep, in the test session's shared store (conftest.shared_data), which the quick
    reproduction profile reads back."""
    return wb.sweep("label_noise", preset="double_descent", grid={"width": [8, 16, 256], "flip_rate": [0.0, 0.2]},
                    seeds=[0, 1, 2], epochs=1500, store=wb.Store(tmp_path_factory.getbasetemp() / "shared-data"),
                    progress=False)


def test_double_descent_peak_grows_with_label_noise(double_descent):
    """Nakkiran et al. 2019, model-wise: with 20% flips the test error rises from width 8 to 16 and falls again by
    width 256; without flips it only falls."""
    err = 1 - double_descent.ds.test_acc.isel(epoch=-1)  # (width, flip_rate, seed)
    noisy, clean = err.sel(flip_rate=0.2), err.sel(flip_rate=0.0)
    rise = noisy.sel(width=16) - noisy.sel(width=8)
    fall = noisy.sel(width=16) - noisy.sel(width=256)
    msg = f"20% flips: error at widths 8/16/256 = {fmt(noisy.sel(width=8).values)} / " \
          f"{fmt(noisy.sel(width=16).values)} / {fmt(noisy.sel(width=256).values)}"
    assert float(rise.mean()) > 0.03 and float(fall.mean()) > 0.03, msg
    assert float((clean.sel(width=16) - clean.sel(width=8)).mean()) < 0.01  # no bump without flips
    peak_over_clean = noisy.sel(width=16).mean() - clean.sel(width=16).mean()
    assert float(peak_over_clean) > 0.15


@pytest.mark.xfail(strict=False, reason=(
    "not reproduced here since every model draws from its own per-purpose streams (the draws changed, the check did "
    "not): at width 16 the nets fit 0.64 / 0.96 / 0.64 of the flipped labels (seeds 0-2), not every one: the peak "
    "of the test error sits at width 16 while the interpolation threshold lies at or just above it"))
def test_the_error_peak_sits_where_the_net_interpolates_the_noisy_labels(double_descent):
    memorized = double_descent.ds.memorized.isel(epoch=-1).sel(flip_rate=0.2, width=16)
    assert float(memorized.mean()) > 0.9, fmt(memorized.values)


@pytest.mark.slow
def test_double_descent_full_preset(tmp_path):
    sweep = wb.sweep("label_noise", preset="double_descent", store=wb.Store(tmp_path), progress=False)
    err = (1 - sweep.ds.test_acc.isel(epoch=-1)).mean("seed")
    noisy, clean = err.sel(flip_rate=0.2), err.sel(flip_rate=0.0)
    peak = int(noisy.sel(width=slice(8, None)).idxmax("width"))
    assert 8 < peak < 1024 and float(noisy.sel(width=peak) - noisy.sel(width=1024)) > 0.05
    assert float(clean.sel(width=1024)) <= float(clean.sel(width=peak)) + 0.01
