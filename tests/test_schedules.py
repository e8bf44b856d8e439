"""Diffusion noise schedules against their papers' formulas."""
import math

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError
from workbench.noise import schedules

T_FINE = torch.linspace(0, 1, 2001, dtype=torch.float64)


@pytest.mark.parametrize("name", schedules.NAMES)
def test_alpha_bar_falls_from_one_to_its_terminal_value_and_logsnr_is_its_logit(name):
    s = schedules.get(name)
    a = s.alpha_bar(T_FINE)
    assert (torch.diff(a) <= 1e-12).all(), name  # monotone non-increasing
    assert a[0] > 0.99 and a[-1] < 0.01, (name, float(a[0]), float(a[-1]))
    inner = (a > 1e-6) & (a < 1 - 1e-6)
    torch.testing.assert_close(s.logsnr(T_FINE)[inner], torch.log(a / (1 - a))[inner], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.sigma(T_FINE)[inner], torch.sqrt((1 - a) / a)[inner], rtol=1e-6, atol=0)


def test_discrete_schedules_are_products_of_their_betas_at_the_grid():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    s = schedules.get("linear")
    for i in (0, 1, 250, 999, 1000):
        torch.testing.assert_close(s.alpha_bar(i / 1000), torch.prod(1 - betas[:i]))
    sl = schedules.get("scaled_linear")
    want = torch.prod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2)
    torch.testing.assert_close(sl.alpha_bar(1.0), want)
    # between grid points: linear in logSNR
    mid = s.logsnr(torch.tensor(100.5 / 1000))
    assert float(mid) == pytest.approx(float((s.logsnr(0.1) + s.logsnr(0.101)) / 2), rel=1e-6)


def test_nichol_cosine_clips_its_betas():
    s = schedules.get("cosine")
    t = torch.arange(1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(s.alpha_bar(t[:900]), (f / f[0])[:900])  # unclipped part: the formula
    betas = 1 - s.grid[1:] / s.grid[:-1]
    assert betas.max() == pytest.approx(0.999) and s.alpha_bar(1.0) > 0


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_zero_terminal_snr_rescale(name):
    s, z = schedules.get(name), schedules.get(name, zero_terminal_snr=True)
    assert float(z.alpha_bar(0.0)) == 1.0 and float(z.alpha_bar(1.0)) == 0.0
    torch.testing.assert_close(z.alpha_bar(1 / 1000), s.alpha_bar(1 / 1000))  # the first step kept
    assert torch.isneginf(z.logsnr(torch.tensor(1.0)))
    a = z.alpha_bar(T_FINE)
    assert (torch.diff(a) <= 1e-12).all()
    # Algorithm 1: √ᾱ shifted and scaled linearly
    sq, sz = s.grid[1:].sqrt(), z.grid[1:].sqrt()
    torch.testing.assert_close(sz, (sq - sq[-1]) * sq[0] / (sq[0] - sq[-1]))


def test_continuous_formulas():
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(schedules.get("laplace", mu=0.3, b=0.5).logsnr(t),
                               torch.tensor([0.3 + 0.5 * math.log(2), 0.3, 0.3 - 0.5 * math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(schedules.get("cauchy", mu=0.1, gamma=2.0).logsnr(t),
                               torch.tensor([2.1, 0.1, -1.9], dtype=torch.float64), atol=1e-12, rtol=0)
    sig = schedules.get("edm").sigma(t)
    want = (0.002 ** (1 / 7) + t * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    torch.testing.assert_close(sig, want)
    # Chen's cosine with start 0, end 1, τ = 1 is cos²(πt/2): the plain continuous cosine
    torch.testing.assert_close(schedules.get("chen_cosine").logsnr(t), schedules.get("shifted_cosine").logsnr(t))
    # input scaling b shifts logSNR by 2·log b; the shifted cosine by 2·log(shift)
    torch.testing.assert_close(schedules.get("sigmoid", b=0.5).logsnr(t) - schedules.get("sigmoid").logsnr(t),
                               torch.full_like(t, 2 * math.log(0.5)))
    torch.testing.assert_close(schedules.get("shifted_cosine", shift=0.25).logsnr(t)
                               - schedules.get("shifted_cosine").logsnr(t), torch.full_like(t, 2 * math.log(0.25)))
    g = schedules.get("sigmoid", start=-3, end=3, tau=1.0).alpha_bar(t)
    v = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    want = (v(3) - v(-3 + t.numpy() * 6)) / (v(3) - v(-3))
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-9)


def test_timestep_spacings_match_lin_et_al_table_2():
    as_steps = lambda x: (x * 1000).round().long().tolist()  # noqa: E731
    assert as_steps(schedules.timesteps(10, "linspace")) == [1000, 889, 778, 667, 556, 445, 334, 223, 112, 1]
    assert as_steps(schedules.timesteps(10, "leading")) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert as_steps(schedules.timesteps(10, "trailing")) == [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]


@pytest.mark.parametrize("call, field", [
    (lambda: schedules.get("quadratic"), "schedule"),
    (lambda: schedules.get("sigmoid", tau=0.0), "tau"),
    (lambda: schedules.get("sigmoid", start=3, end=-3), "start"),
    (lambda: schedules.get("edm", sigma_min=90.0), "sigma_min"),
    (lambda: schedules.get("laplace", gamma=1.0), "gamma"),
    (lambda: schedules.timesteps(0), "steps"),
    (lambda: schedules.timesteps(10, "middle"), "spacing"),
    (lambda: schedules.get("laplace", zero_terminal_snr=True), "zero_terminal_snr"),
])
def test_bad_input(call, field):
    with pytest.raises(ConfigError) as e:
        call()
    assert e.value.field == field


@pytest.mark.parametrize("name", schedules.NAMES)
def test_time_at_inverts_every_schedules_log_snr(name):
    sch = schedules.get(name)
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    assert torch.allclose(schedules.time_at(sch, sch.logsnr(t)), t, atol=1e-9)
    ends = schedules.time_at(sch, torch.tensor([1e6, -1e6], dtype=torch.float64))  # beyond the ends: the ends
    assert ends[0] < 1e-6 and ends[1] > 1 - 1e-6


def test_schedule_parameters_parse_by_name_and_bad_ones_are_refused_naming_the_dial():
    assert schedules.parse_params("mu=1, b=0.25", "laplace") == {"mu": 1.0, "b": 0.25}
    assert schedules.parse_params("T=500; beta_end=0.03", "linear") == {"T": 500, "beta_end": 0.03}
    assert schedules.parse_params("", "edm") == {}
    for text, name, said in [("q=1", "laplace", "mu, b"), ("b", "laplace", "mu, b"), ("b=x", "laplace", "a number"),
                             ("T=1.5", "linear", "an integer"), ("rho=inf", "edm", "finite")]:
        with pytest.raises(ConfigError, match=said) as e:
            schedules.parse_params(text, name, "train_schedule_params")
        assert e.value.field == "train_schedule_params" and e.value.value == text
