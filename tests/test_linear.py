"""The linear-regression laboratories behind the dp_noise and deep_linear claims (workbench.probes.linear)."""
import pytest
import torch

from workbench.probes import linear


def test_gradient_descent_from_zero_finds_the_minimum_norm_interpolant():
    """Depth 1 started at zero stays in the data's row space: it converges to the minimum-norm interpolant, so the
    two excess risks agree (the check of deeper nets is measured against this)."""
    r = linear.deep_linear_risk(0, 1, n=20, dim=200, steps=3000, lr=0.5)
    assert r["train_mse"] < 1e-6 and r["net"] == pytest.approx(r["min_norm"], rel=1e-4)


def test_a_deeper_net_interpolates_too():
    r = linear.deep_linear_risk(1, 3, n=20, dim=200, width=30, steps=1500)
    assert r["train_mse"] < 0.01 * r["noise_var"] and 0 < r["net"] < 1


def test_the_spiked_data_has_the_covariance_it_says():
    x, y, w_star, cov = linear.spiked_regression(0, 20_000, 40, 4, 0.05, 0.5)
    assert torch.allclose(x.var(0), cov, rtol=0.05) and float(w_star.norm()) == pytest.approx(1.0)
    assert float((y - x @ w_star).std()) == pytest.approx(0.5, rel=0.05)


def test_anti_correlated_noise_leaves_less_excess_risk_than_independent():
    independent = linear.noisy_gd_risk(0, 0.0, 0.1, 400)
    correlated = linear.noisy_gd_risk(0, 1.0, 0.1, 400)
    assert correlated < independent / 3
    assert linear.noisy_gd_risk(0, 0.0, 0.0, 400) < correlated  # without noise only the optimisation is left


def test_the_linear_probe_fits_scikit_learns_logistic_regression():
    """The probe minimizes scikit-learn's objective (C · Σ CE + ½‖W‖², standardized features): the same held-out
    accuracy as LogisticRegression on the digits' pixels; non-finite features give nan."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x, y = torch.tensor(d.data[:500]), torch.tensor(d.target[:500])
    train = torch.rand(500, generator=torch.Generator().manual_seed(0)) < 0.5
    xs = x.numpy()
    mu, sd = xs[train.numpy()].mean(0), xs[train.numpy()].std(0) + 1e-8
    ref = LogisticRegression(C=1.0, max_iter=5000).fit((xs[train.numpy()] - mu) / sd, d.target[:500][train.numpy()])
    expect = (ref.predict((xs[~train.numpy()] - mu) / sd) == d.target[:500][~train.numpy()]).mean()
    assert linear.probe_accuracy(x, y, train) == pytest.approx(expect, abs=0.005) and expect > 0.9
    assert np.isnan(linear.probe_accuracy(torch.full((10, 3), float("nan")), torch.zeros(10), torch.ones(10) > 0))


def test_a_pretrained_net_is_probed_in_domain_and_on_shifted_digits():
    """linear_probe: the frozen features of a net pre-trained on digits are probed on clean test digits and on them
    moved two pixels (each image one of four directions, the border zero); refused where it cannot act."""
    import numpy as np

    import workbench as wb
    from workbench import datasets
    from workbench.errors import ConfigError

    x = torch.zeros(3, 16)
    x[:, 5] = 1  # the pixel (1, 1) of a 4×4 image
    moved = datasets.shifted(x, (4, 4), 1, torch.Generator().manual_seed(0)).reshape(3, 4, 4)
    assert (moved.sum((1, 2)) == 1).all()
    spots = {tuple(int(v) for v in torch.nonzero(m)[0]) for m in moved}
    assert spots <= {(0, 1), (2, 1), (1, 0), (1, 2)}  # one pixel up, down, left or right
    run = wb.run("label_noise", epochs=3, flip_rate=0.0, linear_probe=True, loss_snapshots=0, progress=False)
    iid, ood = float(run.ds.probe_acc), float(run.ds.probe_acc_shifted)
    assert iid > 0.85 and 0.1 < ood < iid, (iid, ood)  # the shift is out of domain for an MLP's features
    plain = wb.run("label_noise", epochs=1, n_train=200, width=16, loss_snapshots=0, progress=False)
    assert np.isnan(plain.ds.probe_acc.values).all()
    for dials in ({"model": "cnn"}, {"dataset": "blobs"}):
        with pytest.raises(ConfigError) as e:
            wb.run("label_noise", linear_probe=True, **dials)
        assert e.value.field == "linear_probe", e.value
