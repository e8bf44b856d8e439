"""Weight and representation spectra.

Weights (Martin & Mahoney 2021, "Implicit self-regularization in deep neural networks"): the empirical spectral
density of X = WᵀW / N for an N×M layer, the Marchenko–Pastur law of a random matrix of the same shape for
comparison, a power law fitted to its tail by maximum likelihood with x_min chosen by the Kolmogorov–Smirnov
distance (Clauset, Shalizi & Newman 2009), and the stable rank ‖W‖_F² / ‖W‖₂².
Representations: covariance eigenvalues of hidden features, the effective rank exp(H(p)) of their normalised
eigenvalues (Roy & Vetterli 2007), and diffusion spectral entropy with its mutual information against labels (Liao
et al. 2023, "Assessing neural network representations during training using noise-resilient diffusion spectral
entropy").
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError


def esd(w: torch.Tensor) -> np.ndarray:
    """Eigenvalues of X = WᵀW / N of an N×M matrix (rows N ≥ columns taken as given), ascending."""
    if w.ndim != 2:
        raise ConfigError("w", tuple(w.shape), "a 2-D weight matrix")
    n = w.shape[0]
    return torch.linalg.eigvalsh(w.double().T @ w.double() / n).clamp_min(0).cpu().numpy()


def stable_rank(w: torch.Tensor) -> float:
    """‖W‖_F² / ‖W‖₂²: how many directions carry the matrix's energy."""
    s = torch.linalg.svdvals(w.double())
    return float((s**2).sum() / s[0] ** 2)


def marchenko_pastur(n: int, m: int, sigma2: float, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The MP density of X = WᵀW / N, W an N×M matrix of i.i.d. entries of variance σ² (q = M / N ≤ 1):
    ρ(λ) = √((λ₊ − λ)(λ − λ₋)) / (2π σ² q λ), λ± = σ²(1 ± √q)²."""
    q = m / n
    if q > 1:
        raise ConfigError("shape", (n, m), "N ≥ M (transpose the matrix)")
    lo, hi = sigma2 * (1 - math.sqrt(q)) ** 2, sigma2 * (1 + math.sqrt(q)) ** 2
    lam = np.linspace(lo, hi, points)
    rho = np.sqrt(np.clip((hi - lam) * (lam - lo), 0, None)) / (2 * math.pi * sigma2 * q * np.maximum(lam, 1e-300))
    return lam, rho


def mp_fit(w: torch.Tensor) -> dict:
    """The MP law for W's shape with σ² = the mean entry power (so the ESD's mean matches); its edges and the share
    of the ESD beyond the upper edge (the spikes learning put there)."""
    n, m = w.shape
    if m > n:
        w = w.T
        n, m = m, n
    sigma2 = float(w.double().pow(2).mean())
    ev = esd(w)
    q = m / n
    hi = sigma2 * (1 + math.sqrt(q)) ** 2
    return {"sigma2": sigma2, "lambda_minus": sigma2 * (1 - math.sqrt(q)) ** 2, "lambda_plus": hi,
            "beyond_edge": float((ev > hi).mean()), "q": q}


def power_law_fit(x, xmin: float | None = None, min_tail: int = 10) -> dict:
    """Continuous power law p(x) ∝ x^−α for x ≥ x_min by maximum likelihood, α = 1 + n / Σ ln(x_i / x_min); x_min
    (unless given) is the candidate minimising the KS distance between the tail and the fit."""
    x = np.sort(np.asarray(x, dtype=float))
    x = x[np.isfinite(x) & (x > 0)]
    if len(x) < min_tail:
        raise ConfigError("x", len(x), f"at least {min_tail} positive values")

    def fit(lo):
        tail = x[x >= lo]
        alpha = 1 + len(tail) / np.log(tail / lo).sum()
        cdf_emp = np.arange(len(tail)) / len(tail)
        cdf_fit = 1 - (tail / lo) ** (1 - alpha)
        return alpha, float(np.abs(cdf_emp - cdf_fit).max()), len(tail)

    if xmin is not None:
        alpha, ks, n = fit(xmin)
        return {"alpha": alpha, "xmin": xmin, "ks": ks, "n_tail": n}
    # every distinct value that leaves at least min_tail points is a candidate (as powerlaw / weightwatcher),
    # all fitted at once: for the tail from sorted index i, Σ ln(x_j / x_i) = S_i − (n − i) ln x_i with S_i the
    # suffix sums of ln x, and the KS distance over the tail from the same suffix
    n_all = len(x)
    first = np.unique(x[: n_all - min_tail + 1], return_index=True)[1]  # the first index of each distinct value
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} ln x_j
    best = None
    for i in first:
        tail = x[i:]
        m = n_all - i
        s = suffix[i] - m * logs[i]
        if s <= 0:
            continue  # a tail of equal values has no exponent
        alpha = 1 + m / s
        cdf_fit = 1 - (tail / x[i]) ** (1 - alpha)
        ks = float(np.abs(np.arange(m) / m - cdf_fit).max())
        if best is None or ks < best[1]:
            best = (alpha, ks, m, x[i])
    if best is None:
        raise ConfigError("x", "equal values", f"at least {min_tail} positive values that are not all equal")
    alpha, ks, n, lo = best
    return {"alpha": float(alpha), "xmin": float(lo), "ks": ks, "n_tail": int(n)}


def covariance_spectrum(h: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the features' covariance (h: examples × features), descending."""
    h = h.double().reshape(h.shape[0], -1)
    h = h - h.mean(0)
    cov = h.T @ h / max(h.shape[0] - 1, 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0).cpu().numpy()


def effective_rank(values, of: str = "singular") -> float:
    """Roy & Vetterli's (2007) effective rank of a matrix: exp of the Shannon entropy of its normalised singular
    values σ_i / Σσ (1 for one direction, d for d equal ones). of="singular": `values` are the matrix's singular
    values; of="eigen": they are the eigenvalues of its Gram or covariance matrix (σ², as covariance_spectrum
    gives), so their square roots are used: the effective rank of the data matrix itself."""
    if of not in ("singular", "eigen"):
        raise ConfigError("of", of, "singular or eigen")
    v = np.asarray(values, dtype=float)
    v = v[v > 0]
    if of == "eigen":
        v = np.sqrt(v)
    p = v / v.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def diffusion_spectral_entropy(h: torch.Tensor, t: int = 1, sigma: float | None = None) -> float:
    """DSE: the entropy of |λ|^t (normalised) for the eigenvalues λ of the diffusion matrix P = D⁻¹K, K the Gaussian
    kernel exp(−‖h_i − h_j‖² / σ) on the examples (σ: the median squared distance unless given)."""
    h = h.double().reshape(h.shape[0], -1)
    d2 = torch.cdist(h, h).pow(2)
    k = torch.exp(-d2 / (sigma or _bandwidth(d2)))
    # P = D^-1 K has the eigenvalues of the symmetric D^-1/2 K D^-1/2
    dinv = k.sum(1).rsqrt()
    lam = torch.linalg.eigvalsh(dinv[:, None] * k * dinv[None]).abs().pow(t)
    p = lam[lam > 0] / lam[lam > 0].sum()
    return float(-(p * p.log()).sum())


def diffusion_spectral_mi(h: torch.Tensor, labels: torch.Tensor, t: int = 1, sigma: float | None = None,
                          total: float | None = None) -> float:
    """DSMI: DSE of all examples minus the label-weighted DSE within each class (high when classes separate);
    `total`: the DSE of all examples when already computed with this `sigma`."""
    h = h.double().reshape(h.shape[0], -1)
    sigma = sigma or bandwidth(h)  # one kernel for the whole set and its classes
    total = diffusion_spectral_entropy(h, t, sigma) if total is None else total
    labels = torch.as_tensor(labels)
    within = 0.0
    for c in labels.unique():
        mask = labels == c
        if mask.sum() > 1:
            within += float(mask.float().mean()) * diffusion_spectral_entropy(h[mask], t, sigma)
    return total - within


def bandwidth(h: torch.Tensor) -> float:
    """The DSE kernel's default σ: the median squared distance between distinct examples of h (n, ...)."""
    h = h.double().reshape(h.shape[0], -1)
    return _bandwidth(torch.cdist(h, h).pow(2))


def _bandwidth(d2: torch.Tensor) -> float:
    positive = d2[d2 > 0]
    return float(positive.median()) if len(positive) else 1.0


def radial_power_spectrum(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of images (n, H, W): |FFT2|² (orthonormal) averaged over the images and
    over the frequencies of each integer radius |k| = 0 .. min(H, W) // 2; returns (radius, power)."""
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ConfigError("images", tuple(images.shape), "a tensor (n, H, W) or (H, W)")
    h, w = images.shape[-2:]
    power = torch.fft.fft2(images.double(), norm="ortho").abs().pow(2).mean(0)  # (H, W)
    ky, kx = torch.meshgrid(torch.fft.fftfreq(h) * h, torch.fft.fftfreq(w) * w, indexing="ij")
    radius = torch.sqrt(ky**2 + kx**2).round().long()
    top = min(h, w) // 2
    keep = radius <= top
    sums = torch.zeros(top + 1, dtype=torch.float64).index_add_(0, radius[keep], power[keep])
    counts = torch.zeros(top + 1, dtype=torch.float64).index_add_(0, radius[keep], torch.ones_like(power[keep]))
    return np.arange(top + 1), (sums / counts).numpy()


def jacobian_spectrum(fn, x: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the Jacobian of fn: R^d -> R^d at x (any shape, flattened), by forming it with torch.func
    (a denoiser's Jacobian at a noise level: its eigenvalues say which directions it keeps). Sorted by real part,
    descending; real when the imaginary parts vanish."""
    from torch.func import jacrev

    shape = x.shape
    j = jacrev(lambda v: fn(v.reshape(shape)).reshape(-1))(x.reshape(-1).detach())
    if j.shape[0] != j.shape[1]:
        raise ConfigError("fn", tuple(j.shape), "a map from R^d to R^d (same number of outputs as inputs)")
    ev = torch.linalg.eigvals(j.double())
    ev = ev[torch.argsort(ev.real, descending=True)].numpy()
    return ev.real if np.abs(ev.imag).max(initial=0) < 1e-9 * max(1.0, np.abs(ev).max(initial=0)) else ev
