"""Linear regression laboratories, exact and small (seconds on a CPU): where a theory paper's claim is about least
squares, the claim is checked on least squares.

- `noisy_gd_risk`: gradient descent with injected gradient noise, independent or anti-correlated across steps
  (Koloskova et al. 2023, "Correlated noise provably beats independent noise for differentially private learning").
- `deep_linear_risk`: deep linear networks trained to interpolate noisy labels against the minimum ℓ2-norm
  interpolant (Chatterji & Long 2023, "Deep linear networks can benignly overfit when shallow ones do").

Excess risk is measured exactly against the population covariance Σ: (w − w*)ᵀ Σ (w − w*).
"""
from __future__ import annotations

import numpy as np
import torch


def noisy_gd_risk(seed: int, beta: float, sigma: float, steps: int, dim: int = 50, n: int = 500,
                  lr: float = 0.5) -> float:
    """Excess risk of gradient descent on least squares with injected gradient noise σ(ξ_t − βξ_{t−1}), averaged
    over the last half of the steps, measured against the empirical risk minimizer (so only the noise counts):
    features with a decaying spectrum λ_i = 1/i (many poorly conditioned directions), y = x·w* + N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, dim + 1, dtype=torch.float64) ** -0.5
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * scale
    w_star = torch.randn(dim, generator=g, dtype=torch.float64)
    y = x @ w_star + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    h = x.T @ x / n
    w_hat = torch.linalg.solve(h, x.T @ y / n)
    cov = scale ** 2  # the population covariance's diagonal
    noise = torch.Generator().manual_seed(seed + 1)
    w, prev, risk = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64), []
    for t in range(steps):
        xi = torch.randn(dim, generator=noise, dtype=torch.float64)
        w = w - lr * (h @ (w - w_hat) + sigma * (xi - beta * prev))
        prev = xi
        if t >= steps // 2:
            risk.append(float(((w - w_hat) ** 2 * cov).sum()))
    return float(np.mean(risk))


def spiked_regression(seed: int, n: int, dim: int, spikes: int, tail: float, noise: float):
    """n samples of x ~ N(0, Σ), Σ = diag(1 × spikes, tail × (dim − spikes)) — a few strong directions and a long
    flat tail that can absorb the label noise (benign overfitting needs its effective rank ≫ n) — with
    y = x·w* + N(0, noise²), w* in the spiked directions (‖w*‖ = 1). Returns x, y, w*, diag(Σ)."""
    g = torch.Generator().manual_seed(seed)
    cov = torch.cat([torch.ones(spikes), torch.full((dim - spikes,), tail)]).double()
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * cov.sqrt()
    w_star = torch.zeros(dim, dtype=torch.float64)
    w_star[:spikes] = torch.randn(spikes, generator=g, dtype=torch.float64)
    w_star /= w_star.norm()
    y = x @ w_star + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, w_star, cov


def excess_risk(w: torch.Tensor, w_star: torch.Tensor, cov: torch.Tensor) -> float:
    return float(((w.detach() - w_star) ** 2 * cov).sum())


def deep_linear_risk(seed: int, depth: int, n: int = 50, dim: int = 1000, spikes: int = 5, tail: float = 0.02,
                     noise: float = 0.5, width: int = 100, init: float = 0.3, steps: int = 3000,
                     lr: float = 0.02) -> dict:
    """A depth-`depth` linear net f(x) = x W_1 ⋯ W_L (hidden width `width`; depth 1 is a linear model started at
    zero) trained by full-batch gradient descent on the squared loss until it interpolates, against the minimum
    ℓ2-norm interpolant of the same data. Returns both excess risks and the net's final training loss."""
    x, y, w_star, cov = spiked_regression(seed, n, dim, spikes, tail, noise)
    w_min = torch.linalg.lstsq(x, y[:, None], driver="gelsd").solution[:, 0]  # the minimum-norm interpolant
    g = torch.Generator().manual_seed(10_000 + seed)
    shapes = [(dim, 1)] if depth == 1 else [(dim, width)] + [(width, width)] * (depth - 2) + [(width, 1)]
    layers = [torch.zeros(*shape, dtype=torch.float64) if depth == 1 else
              init * torch.randn(*shape, generator=g, dtype=torch.float64) / shape[0] ** 0.5 for shape in shapes]
    for w in layers:
        w.requires_grad_()
    scale = float(torch.linalg.matrix_norm(x, 2)) ** 2 / n  # the top eigenvalue of xᵀx / n: a stable step
    opt = torch.optim.SGD(layers, lr=lr / scale)
    for _ in range(steps):
        h = x
        for w in layers:  # (n, d) through the layers: cheaper than forming the end-to-end product (d, 1)
            h = h @ w
        loss = (h[:, 0] - y).pow(2).mean() / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        prod = layers[0]
        for w in layers[1:]:
            prod = prod @ w
        w_net = prod[:, 0]  # the end-to-end linear map
        train = float(((x @ w_net) - y).pow(2).mean())
    return {"net": excess_risk(w_net, w_star, cov), "min_norm": excess_risk(w_min, w_star, cov),
            "train_mse": train, "noise_var": noise ** 2}


def probe_accuracy(features: torch.Tensor, y: torch.Tensor, train: torch.Tensor, c: float = 1.0,
                   iterations: int = 200) -> float:
    """A linear probe on frozen features: multinomial logistic regression fitted on the rows where `train` is True
    (features standardized by those rows' mean and std), with scikit-learn's objective — C · Σ cross-entropy +
    ½‖W‖² (bias unpenalized) — minimized by L-BFGS in float64; its accuracy on the other rows. nan for non-finite
    features."""
    f = features.detach().double().cpu()
    if not torch.isfinite(f).all():
        return float("nan")
    y, train = y.cpu().long(), train.cpu().bool()
    mu, sd = f[train].mean(0), f[train].std(0, correction=0) + 1e-8
    f = (f - mu) / sd
    x, t = f[train], y[train]
    classes = int(y.max()) + 1
    w = torch.zeros(f.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def objective():
        opt.zero_grad()
        loss = c * torch.nn.functional.cross_entropy(x @ w + b, t, reduction="sum") + 0.5 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        return float(((f[~train] @ w + b).argmax(1) == y[~train]).double().mean())
