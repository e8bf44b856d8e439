"""Hessian probes against the dense Hessian of a model small enough to form it."""
import math

import pytest
import torch
from torch.func import functional_call

from workbench.errors import ConfigError
from workbench.probes import hessian


def small_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.8)
    x, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    params = {n: p.detach() for n, p in net.named_parameters()}

    def loss_fn(p):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y)

    return loss_fn, params


def dense(loss_fn, params):
    names = list(params)
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def f(v):
        parts = torch.split(v, sizes)
        return loss_fn({n: part.reshape(params[n].shape) for n, part in zip(names, parts)})

    return torch.autograd.functional.hessian(f, flat)


def test_top_eigenvalues_agree_with_the_dense_hessian():
    loss_fn, params = small_problem()
    want = torch.linalg.eigvalsh(dense(loss_fn, params)).flip(0)[:5]
    got = hessian.top_eigenvalues(loss_fn, params, k=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)
    # and the eigenvectors: H v = λ v
    vals, vecs = hessian.top_eigenvalues(loss_fn, params, k=1, return_vectors=True)
    hv = hessian.hvp(loss_fn, params)(vecs[0])
    for n in params:
        torch.testing.assert_close(hv[n], vals[0] * vecs[0][n], rtol=1e-5, atol=1e-7)


def test_hutchinson_trace_within_three_standard_errors():
    loss_fn, params = small_problem(1)
    tr = torch.trace(dense(loss_fn, params)).item()
    est, se = hessian.trace(loss_fn, params, probes=200, generator=torch.Generator().manual_seed(0))
    assert abs(est - tr) < 3 * se and se < 0.2 * abs(tr)


def test_slq_density_integrates_to_one_and_sits_on_the_spectrum():
    loss_fn, params = small_problem(2)
    evals = torch.linalg.eigvalsh(dense(loss_fn, params))
    grid, dens = hessian.density(loss_fn, params, iters=60, probes=3, generator=torch.Generator().manual_seed(0))
    mass = torch.trapezoid(dens, grid).item()
    assert mass == pytest.approx(1.0, abs=0.02)
    mean = torch.trapezoid(dens * grid, grid).item()  # the density's mean is tr H / n
    assert mean == pytest.approx(evals.mean().item(), abs=0.1 * evals.abs().max().item())
    assert grid.min() <= evals.min() + 1e-6 and grid.max() >= evals.max() - 1e-6


def test_bad_input():
    loss_fn, params = small_problem()
    n = sum(p.numel() for p in params.values())
    with pytest.raises(ConfigError) as e:
        hessian.top_eigenvalues(loss_fn, params, k=n + 1)
    assert e.value.field == "k" and str(n) in str(e.value)
    with pytest.raises(ConfigError) as e:
        hessian.top_eigenvalues(lambda p: p["0.weight"].sum(0), params, k=1)
    assert e.value.field == "loss_fn"
    bad = {**params, "0.bias": params["0.bias"].clone().fill_(math.nan)}
    with pytest.raises(ConfigError) as e:
        hessian.trace(loss_fn, bad)
    assert e.value.field == "params" and "0.bias" in str(e.value)


def test_per_model_on_stacked_parameters():
    problems = [small_problem(s) for s in range(3)]
    stacked = {n: torch.stack([p[n] for _, p in problems]) for n in problems[0][1]}
    got = hessian.per_model(hessian.top_eigenvalues, lambda m: problems[m][0], stacked, k=2)
    for (loss_fn, params), values in zip(problems, got):
        torch.testing.assert_close(values, torch.linalg.eigvalsh(dense(loss_fn, params)).flip(0)[:2], rtol=1e-4, atol=0)


@pytest.mark.parametrize("loss", ["MSELoss", "mse_loss", "hand-written"])
@pytest.mark.parametrize("act", [torch.nn.Tanh, torch.nn.ReLU, torch.nn.GELU])
def test_mse_losses_work_and_agree_with_the_dense_hessian(loss, act):
    """Regression: nn.MSELoss and F.mse_loss crashed under jvp ("ZeroTensors are immutable")."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), act(), torch.nn.Linear(6, 2)).double()
    x, y = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    params = {n: p.detach() for n, p in net.named_parameters()}
    fn = {"MSELoss": torch.nn.MSELoss(), "mse_loss": torch.nn.functional.mse_loss,
          "hand-written": lambda z, t: (z - t).pow(2).mean()}[loss]

    def loss_fn(p):
        return fn(functional_call(net, p, (x,)), y)

    want = torch.linalg.eigvalsh(dense(loss_fn, params)).flip(0)[:3]
    got = hessian.top_eigenvalues(loss_fn, params, k=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_residual_measures_how_far_an_eigenpair_is():
    loss_fn, params = small_problem()
    vals, vecs = hessian.top_eigenvalues(loss_fn, params, k=1, return_vectors=True)
    assert hessian.residual(loss_fn, params, float(vals[0]), vecs[0]) < 1e-6 * abs(float(vals[0]))
    rough, rvecs = hessian.top_eigenvalues(loss_fn, params, k=1, iters=3, return_vectors=True,
                                           generator=torch.Generator().manual_seed(0))
    r = hessian.residual(loss_fn, params, float(rough[0]), rvecs[0])
    exact = torch.linalg.eigvalsh(dense(loss_fn, params))
    assert r > 1e-6 and (exact - rough[0]).abs().min() <= r + 1e-12  # an eigenvalue within the residual
