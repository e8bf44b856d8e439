"""The grokking study: its pieces against their formulas, and the paper's findings over seeds (small p)."""
import numpy as np
import pytest
import torch

import workbench as wb
from workbench import datasets
from workbench.errors import ConfigError
from workbench.studies import grokking

SEEDS = [0, 1, 2]


def test_modular_addition_data():
    d = datasets.modular_addition(7, 0.5, seed=0)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert x.shape == (49, 14) and len(d.y_train) == 24
    a, b = x[:, :7].argmax(1), x[:, 7:].argmax(1)
    assert torch.equal(y, (a + b) % 7) and x.sum(1).eq(2).all()
    assert len({(int(i), int(j)) for i, j in zip(a, b)}) == 49  # every pair once


def test_stablemax_and_perpendicular_gradient():
    z = torch.tensor([[-3.0, 0.0, 2.0]])
    s = grokking.stablemax(z)
    torch.testing.assert_close(s, torch.tensor([[0.25, 1.0, 3.0]]))
    loss = grokking.per_example_loss(z, torch.tensor([2]), "stablemax")
    torch.testing.assert_close(loss, -torch.log(torch.tensor([3.0 / 4.25])))
    g, w = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    gp = grokking.perpendicular(g, w)
    torch.testing.assert_close((gp * w).sum((1, 2)), torch.zeros(2), atol=1e-5, rtol=0)  # no component along w
    torch.testing.assert_close(gp.norm(dim=(1, 2)), g.norm(dim=(1, 2)))  # the norm of g
    # softmax collapse: the float32 loss of a large margin is exactly zero, the float64 one is not
    big = torch.tensor([[0.0, 20.0]])
    assert grokking.per_example_loss(big, torch.tensor([1]), "ce").item() == 0.0
    assert grokking.per_example_loss(big.double(), torch.tensor([1]), "ce").item() > 0.0


def test_fourier_power_finds_a_single_frequency():
    p, k = 13, 3
    tokens = torch.arange(p, dtype=torch.float64)
    emb = torch.stack([torch.cos(2 * np.pi * k * tokens / p), torch.sin(2 * np.pi * k * tokens / p)], -1)[None]
    power = grokking.fourier_power(emb)[0]
    assert int(power[1:].argmax()) + 1 == k and float(power[1:].sum()) == pytest.approx(float(power[k]), rel=1e-9)


def _sweep(grid, **dials):
    """The sweeps of the softmax_collapse and perp_grad claims (workbench/reproduce.py), in the test session's shared
    store: the quick reproduction profile reads them back instead of training them again."""
    return wb.sweep("grokking", grid=grid, seeds=SEEDS, progress=False, **dials).ds


def test_float32_softmax_collapses_and_does_not_generalize_float64_delays_it(shared_data):
    """Prieto et al. 2025: without weight decay, float32 softmax CE drives training losses to exactly zero (SC)
    and test accuracy stays at chance; float64 postpones the collapse. p = 31, ~10 s per setting on 2 cores."""
    ds = _sweep({"softmax_precision": ["float32", "float64"]}, p=31, epochs=1500, eval_every=50)
    f32, f64 = ds.sel(softmax_precision="float32"), ds.sel(softmax_precision="float64")
    assert (f32.train_acc.isel(epoch=-1) == 1).all()
    assert (f32.sc_fraction.isel(epoch=-1) > 0.5).all()
    assert (f32.test_acc.isel(epoch=-1) < 0.1).all()
    c32 = f32.collapse_epoch.values
    c64 = np.nan_to_num(f64.collapse_epoch.values, nan=np.inf)  # never within the budget: later than any epoch
    assert np.isfinite(c32).all() and (c64 > c32).all(), (c32, c64)
    assert (f64.sc_fraction.isel(epoch=-1) < f32.sc_fraction.isel(epoch=-1)).all()


def test_perpendicular_gradient_generalizes_without_weight_decay(shared_data):
    # the paper's settings (lr 0.01, AdamW, no weight decay)
    ds = _sweep({"optimizer": ["adamw", "perp_adamw"]}, p=53, epochs=300, eval_every=25)
    plain, perp = ds.sel(optimizer="adamw"), ds.sel(optimizer="perp_adamw")
    assert (perp.test_acc.isel(epoch=-1) > 0.9).all(), perp.test_acc.isel(epoch=-1).values
    assert (plain.test_acc.isel(epoch=-1) < 0.1).all()
    assert np.isfinite(perp.grok_epoch.values).all() and np.isnan(plain.grok_epoch.values).all()
    # the grokked embeddings concentrate their power in a few frequencies
    assert (perp.fourier_top8.isel(epoch=-1) > plain.fourier_top8.isel(epoch=-1) + 0.3).all()


def test_grokking_bad_input():
    with pytest.raises(ConfigError) as e:
        wb.run("grokking", p=5, train_fraction=0.99)
    assert e.value.field == "train_fraction"
    with pytest.raises(ConfigError) as e:
        wb.run("grokking", softmax_precision="float8")
    assert e.value.field == "softmax_precision"
