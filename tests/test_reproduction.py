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


def test_elr_keeps_final_accuracy_clearly_higher(noisy):
    store, ce = noisy
    elr = curves(store, SEEDS, flip_rate=0.4, loss="elr")
    gain = elr["final"] - ce["final"]
    assert np.all(gain > 0.1), f"ELR final {fmt(elr['final'])} vs CE final {fmt(ce['final'])}"
    assert np.all(elr["mem_final"] < 0.2), f"ELR memorized {fmt(elr['mem_final'])}"


def test_without_flips_there_is_no_drop(tmp_path):
    clean = curves(wb.Store(tmp_path), SEEDS, flip_rate=0.0, loss="ce")
    assert np.all(clean["peak"] - clean["final"] < 0.03), f"peak {fmt(clean['peak'])}, final {fmt(clean['final'])}"


@pytest.mark.slow
def test_gce_resists_memorization_too(noisy):
    store, ce = noisy
    gce = curves(store, SEEDS + [3, 4], flip_rate=0.4, loss="gce")
    assert gce["final"].mean() - ce["final"].mean() > 0.1, f"GCE {fmt(gce['final'])} vs CE {fmt(ce['final'])}"
