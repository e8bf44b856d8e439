"""The loss Hessian without forming it: Hessian-vector products (forward-over-reverse, torch.func), its top
eigenvalues by Lanczos with full reorthogonalization, its trace by Hutchinson, its eigenvalue density by stochastic
Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019).

`params` is a dict name -> tensor (as torch.func.functional_call takes) and `loss_fn(params)` returns a scalar.
Vectors are dicts of the same shapes, flattened to one vector inside the Lanczos loop (in float64).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.func import grad, jvp, vjp

from ..errors import ConfigError


def _check(loss_fn, params: dict) -> int:
    if not params:
        raise ConfigError("params", "{}", "a non-empty dict of name -> tensor")
    for name, p in params.items():
        if not torch.isfinite(p).all():
            raise ConfigError("params", name, "finite values (this parameter has NaN or inf)")
    out = loss_fn(params)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError("loss_fn", shape, "a function returning a scalar loss")
    return sum(p.numel() for p in params.values())


def hvp(loss_fn: Callable[[dict], torch.Tensor], params: dict) -> Callable[[dict], dict]:
    """v -> H v, the Hessian of loss_fn at params times v: the forward-mode derivative of the gradient, or its
    reverse-mode one (H is symmetric: Hv = vᵀH) for losses whose backward has no forward-mode rule that torch.func
    can run (nn.MSELoss / F.mse_loss raise "ZeroTensors are immutable" under jvp)."""
    g = grad(lambda p: loss_fn(p).reshape(()))
    reverse = None

    def product(v):
        nonlocal reverse
        if reverse is None:
            try:
                return jvp(g, (params,), (v,))[1]
            except RuntimeError as e:
                if "ZeroTensor" not in str(e):
                    raise
                reverse = vjp(g, params)[1]  # built once: every later product reuses the linearisation
        return reverse(v)[0]

    return product


def _flat_matvec(loss_fn, params):
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    dtype = next(iter(params.values())).dtype
    product = hvp(loss_fn, params)

    def matvec(x: torch.Tensor) -> torch.Tensor:  # x: (n,) float64
        parts = torch.split(x.to(dtype), sizes)
        out = product({n: part.reshape(s) for n, part, s in zip(names, parts, shapes)})
        return torch.cat([out[n].reshape(-1) for n in names]).double()

    return matvec


def lanczos(matvec: Callable, n: int, iters: int, v0: torch.Tensor | None = None,
            generator: torch.Generator | None = None, device="cpu"):
    """`iters` steps of Lanczos with full reorthogonalization: (alphas, betas, Q) of the tridiagonal T = QᵀAQ."""
    m = min(iters, n)
    q = v0.double().to(device) if v0 is not None else torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    q = q / q.norm()
    Q = torch.zeros(m, n, dtype=torch.float64, device=device)
    alphas, betas = [], []
    for j in range(m):
        Q[j] = q
        w = matvec(q)
        alpha = torch.dot(w, q)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full reorthogonalization, twice for safety
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        alphas.append(alpha)
        beta = w.norm()
        if j == m - 1 or beta < 1e-12 * max(1.0, abs(float(alpha))):
            Q = Q[: j + 1]
            break
        betas.append(beta)
        q = w / beta
    a = torch.stack(alphas)
    b = torch.stack(betas[: len(alphas) - 1]) if len(alphas) > 1 else a.new_zeros(0)
    return a, b, Q


def _tridiag(a, b):
    return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def top_eigenvalues(loss_fn: Callable[[dict], torch.Tensor], params: dict, k: int = 3, iters: int | None = None,
                    generator: torch.Generator | None = None, v0: dict | None = None,
                    return_vectors: bool = False):
    """The k largest eigenvalues of the loss Hessian, descending (float64). `iters` Lanczos steps (default
    max(2k + 20, 40), capped at the number of parameters: then exact). v0 (a dict like params, e.g. the previous
    top eigenvector) warm-starts the iteration; return_vectors=True also returns the eigenvectors as dicts."""
    n = _check(loss_fn, params)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError("k", k, f"an integer in [1, {n}] (the number of parameters)")
    dev = next(iter(params.values())).device
    x0 = torch.cat([v0[name].reshape(-1) for name in params]) if v0 is not None else None
    a, b, Q = lanczos(_flat_matvec(loss_fn, params), n, iters or max(2 * k + 20, 40), x0, generator, dev)
    evals, evecs = torch.linalg.eigh(_tridiag(a, b))
    order = torch.argsort(evals, descending=True)[:k]
    values = evals[order]
    if not return_vectors:
        return values
    vecs = (Q.T @ evecs[:, order]).T  # (k, n)
    sizes = [p.numel() for p in params.values()]
    as_dicts = [{name: part.reshape(p.shape).to(p.dtype) for (name, p), part in zip(params.items(), torch.split(v, sizes))}
                for v in vecs]
    return values, as_dicts


def residual(loss_fn: Callable[[dict], torch.Tensor], params: dict, value: float, vector: dict) -> float:
    """‖Hv − λv‖ / ‖v‖ for an eigenpair estimate (λ, v): how far a Lanczos value is from a true eigenvalue (some
    eigenvalue of the symmetric H lies within this distance of λ)."""
    hv = hvp(loss_fn, params)(vector)
    num = sum(float((hv[n].double() - value * vector[n].double()).pow(2).sum()) for n in params)
    den = sum(float(vector[n].double().pow(2).sum()) for n in params)
    return math.sqrt(num / den) if den > 0 else float("nan")


def trace(loss_fn: Callable[[dict], torch.Tensor], params: dict, probes: int = 100,
          generator: torch.Generator | None = None) -> tuple[float, float]:
    """Hutchinson's estimate of tr H = E[zᵀ H z], z Rademacher; returns (estimate, standard error)."""
    n = _check(loss_fn, params)
    if probes < 2:
        raise ConfigError("probes", probes, "an integer >= 2")
    matvec = _flat_matvec(loss_fn, params)
    dev = next(iter(params.values())).device
    samples = []
    for _ in range(probes):
        z = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).double().to(dev)
        samples.append(torch.dot(z, matvec(z)).item())
    s = torch.tensor(samples, dtype=torch.float64)
    return float(s.mean()), float(s.std() / math.sqrt(probes))


def density(loss_fn: Callable[[dict], torch.Tensor], params: dict, iters: int = 40, probes: int = 4,
            grid: torch.Tensor | None = None, sigma: float | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature: for each Gaussian probe, the Ritz values
    θ_i weighted by the squared first components τ_i² of their eigenvectors, broadened by a Gaussian of width sigma
    (default 1% of the spectral range); returns (grid, density) with the density integrating to 1."""
    n = _check(loss_fn, params)
    matvec = _flat_matvec(loss_fn, params)
    dev = next(iter(params.values())).device
    nodes, weights = [], []
    for _ in range(probes):
        a, b, _ = lanczos(matvec, n, iters, None, generator, dev)
        theta, vecs = torch.linalg.eigh(_tridiag(a, b))
        nodes.append(theta.cpu())
        weights.append(vecs[0].pow(2).cpu())
    theta, tau = torch.cat(nodes), torch.cat(weights) / probes
    lo, hi = float(theta.min()), float(theta.max())
    span = max(hi - lo, 1e-12)
    sigma = sigma or 0.01 * span
    if grid is None:
        grid = torch.linspace(lo - 0.05 * span, hi + 0.05 * span, 400, dtype=torch.float64)
    dens = (tau[None] * torch.exp(-0.5 * ((grid[:, None] - theta[None]) / sigma) ** 2)).sum(1)
    return grid, dens / (sigma * math.sqrt(2 * math.pi))


def per_model(fn: Callable, loss_fn_of: Callable[[int], Callable[[dict], torch.Tensor]], stacked: dict,
              **kwargs) -> list:
    """Apply a probe (top_eigenvalues, trace, density) to each of the K models of an ensemble's stacked parameters
    (name -> (K, ...)), `loss_fn_of(m)` giving model m's loss as a function of its own parameters."""
    k = next(iter(stacked.values())).shape[0]
    return [fn(loss_fn_of(m), {n: p[m].detach() for n, p in stacked.items()}, **kwargs) for m in range(k)]
