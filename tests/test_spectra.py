"""Weight and representation spectra against their definitions and known laws."""
import math

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError
from workbench.probes import spectra


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5])
def test_power_law_fit_recovers_the_pareto_exponent(alpha):
    rng = np.random.default_rng(0)
    xmin = 1.5
    x = xmin * (1 - rng.random(5000)) ** (-1 / (alpha - 1))  # density ∝ x^-alpha above xmin
    body = rng.uniform(0.1, xmin, 1500)  # values below the tail: x_min must be found
    fit = spectra.power_law_fit(np.concatenate([body, x]))
    assert abs(fit["alpha"] - alpha) < 0.1, fit
    assert fit["xmin"] == pytest.approx(xmin, rel=0.2)


def test_random_weights_follow_marchenko_pastur_and_learning_spikes_leave_it():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(800, 200, generator=g) * 0.3
    ev = spectra.esd(w)
    fit = spectra.mp_fit(w)
    assert fit["sigma2"] == pytest.approx(0.09, rel=0.02)
    assert ev.min() > 0.9 * fit["lambda_minus"] and ev.max() < 1.1 * fit["lambda_plus"]
    lam, rho = spectra.marchenko_pastur(800, 200, fit["sigma2"])
    assert np.trapezoid(rho, lam) == pytest.approx(1.0, abs=0.02)
    spiked = w + 3.0 * torch.outer(torch.randn(800, generator=g), torch.randn(200, generator=g)) / math.sqrt(800)
    assert spectra.mp_fit(spiked)["beyond_edge"] > 0 and fit["beyond_edge"] == 0
    assert spectra.stable_rank(spiked) < spectra.stable_rank(w)


def test_effective_rank_and_covariance_spectrum():
    assert spectra.effective_rank([1, 1, 1, 1]) == pytest.approx(4)
    assert spectra.effective_rank([1, 0, 0]) == pytest.approx(1)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2000, 3, generator=g) * torch.tensor([3.0, 1.0, 0.1])
    ev = spectra.covariance_spectrum(h)
    np.testing.assert_allclose(ev, [9.0, 1.0, 0.01], rtol=0.1)


def test_effective_rank_states_its_convention():
    """Roy & Vetterli's effective rank is of singular values; covariance eigenvalues are σ² (regression: the
    features' covariance spectrum was fed in as if singular values)."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(500, 40, generator=g) * torch.linspace(0.1, 3.0, 40)
    sv = torch.linalg.svdvals(h - h.mean(0)).numpy()
    ev = spectra.covariance_spectrum(h)
    assert spectra.effective_rank(ev, of="eigen") == pytest.approx(spectra.effective_rank(sv), rel=1e-6)
    assert spectra.effective_rank(ev) < spectra.effective_rank(ev, of="eigen")
    with pytest.raises(ConfigError):
        spectra.effective_rank(ev, of="squared")


def _power_law_by_brute_force(x, min_tail):
    """The definition, every candidate x_min fitted on its own (what powerlaw and weightwatcher do)."""
    x = np.sort(x)
    best = None
    for lo in np.unique(x[: len(x) - min_tail + 1]):
        tail = x[x >= lo]
        alpha = 1 + len(tail) / np.log(tail / lo).sum()
        ks = np.abs(np.arange(len(tail)) / len(tail) - (1 - (tail / lo) ** (1 - alpha))).max()
        if best is None or ks < best[1]:
            best = (alpha, ks, lo)
    return best


def test_power_law_fit_tries_every_x_min():
    """Regression: only 200 candidates were tried (Student-t df=3: α 5.46 against powerlaw's 5.59)."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_t(3, size=3000))
    fit = spectra.power_law_fit(x, min_tail=10)
    alpha, ks, lo = _power_law_by_brute_force(x, 10)
    assert fit["xmin"] == lo and fit["alpha"] == pytest.approx(alpha, rel=1e-9) and fit["ks"] == pytest.approx(ks)


def test_diffusion_spectral_mutual_information_is_higher_for_separated_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 8, generator=g) * 6
    separated = centres[y] + torch.randn(200, 8, generator=g)
    mixed = torch.randn(200, 8, generator=g) * 6
    assert spectra.diffusion_spectral_mi(separated, y) > spectra.diffusion_spectral_mi(mixed, y) + 0.3
    assert spectra.diffusion_spectral_entropy(separated) > 0


def test_bad_input():
    with pytest.raises(ConfigError):
        spectra.esd(torch.ones(3))
    with pytest.raises(ConfigError):
        spectra.power_law_fit([1.0, 2.0])


def test_radial_power_spectrum_of_white_noise_is_flat_and_a_wave_peaks_at_its_radius():
    g = torch.Generator().manual_seed(0)
    r, p = spectra.radial_power_spectrum(torch.randn(4000, 16, 16, generator=g))
    assert r.tolist() == list(range(9)) and np.allclose(p[1:], 1.0, rtol=0.05)  # orthonormal FFT: unit power
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    wave = torch.cos(2 * math.pi * 3 * xx / 16)
    r, p = spectra.radial_power_spectrum(wave)
    assert int(np.argmax(p)) == 3


def test_jacobian_spectrum_of_a_linear_map_is_its_eigenvalues():
    a = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    ev = spectra.jacobian_spectrum(lambda v: a @ v, torch.zeros(3))
    np.testing.assert_allclose(ev, [3.0, 1.0, 0.5], atol=1e-9)
    with pytest.raises(ConfigError):
        spectra.jacobian_spectrum(lambda v: v.sum(0, keepdim=True), torch.zeros(3))
