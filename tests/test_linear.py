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
