"""Diffusion training and sampling over any schedule of `workbench.noise.schedules`.

Forward process x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. The denoiser predicts ε, v = √ᾱ ε − √(1 − ᾱ) x_0 (Salimans & Ho
2022) or x_0; `split` turns any of them into (x̂_0, ε̂). Samplers share one signature,
`sample(model, schedule, shape, steps, generator, ...)`, and start from pure noise at the first sampling time:
DDPM ancestral (DDIM with η = 1), DDIM (η dial; η = 0 is deterministic), and Euler and Heun on the
probability-flow ODE in EDM's variables (x̃ = x / √ᾱ, σ = √((1 − ᾱ)/ᾱ): dx̃/dσ = ε̂).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import ConfigError
from ..noise import schedules as sched

PREDICTIONS = ("epsilon", "v", "x0")
SIGMA_MAX_ODE = 80.0  # above this σ the ODE samplers take a first-order step (EDM's σ_max)
SAMPLERS = ("ddpm", "ddim", "euler", "heun")


def noised(x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ x_0 + √(1 − ᾱ) ε, ᾱ broadcast over the trailing dims."""
    a = abar.reshape(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def target(x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        a = abar.reshape(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * eps - (1 - a).sqrt() * x0
    raise ConfigError("prediction", prediction, f"one of {', '.join(PREDICTIONS)}")


def split(out: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction: str):
    """(x̂_0, ε̂) from the model's output at x_t. ε-prediction cannot give x̂_0 where ᾱ = 0 (zero terminal SNR):
    use v or x0 there."""
    a = abar.reshape(-1, *([1] * (x.ndim - 1)))
    sa, s1 = a.sqrt(), (1 - a).sqrt()
    if prediction == "epsilon":
        return (x - s1 * out) / sa.clamp_min(1e-12), out
    if prediction == "v":
        return sa * x - s1 * out, s1 * x + sa * out
    if prediction == "x0":
        return out, (x - sa * out) / s1.clamp_min(1e-12)
    raise ConfigError("prediction", prediction, f"one of {', '.join(PREDICTIONS)}")


def ambient_t_min(schedule: sched.Schedule, sigma_n: float, margin: float = 0.99) -> float:
    """The earliest time an example carrying Gaussian noise of std sigma_n can teach (ambient diffusion): the
    diffusion's own noise, in the variance-exploding frame σ_t² = (1 − ᾱ)/ᾱ, must exceed sigma_n², i.e.
    ᾱ(t) ≤ margin / (1 + sigma_n²). Found on a grid of 10,001 times (ᾱ decreases)."""
    if sigma_n <= 0:
        return 0.0
    grid = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    ok = (schedule.alpha_bar(grid) <= margin / (1 + sigma_n**2)).nonzero()
    if len(ok) == 0:
        raise ConfigError("corruption_sigma", sigma_n, f"a noise level the schedule's ᾱ(1) = "
                                                        f"{float(schedule.alpha_bar(grid[-1:])):.3g} exceeds")
    return float(grid[ok[0, 0]])


def ambient_batch(x_n: torch.Tensor, sigma_n: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor,
                  prediction: str):
    """Ambient diffusion's training example (Daras et al. 2023/2024) for data x_n = x_0 + sigma_n·z of known noise.

    The input x_t = √ᾱ·x_n + √(1 − ᾱ(1 + σ_n²))·ε has exactly the law of √ᾱ·x_0 + √(1 − ᾱ)·ε (it needs
    σ_t² = (1 − ᾱ)/ᾱ ≥ σ_n², see ambient_t_min). Tweedie's formula in the VE frame y_t = x_t/√ᾱ gives
    E[x_n | x_t] = r·y_t + (1 − r)·E[x_0 | x_t] with r = σ_n²/σ_t², so regressing on the pseudo-target
    x̃_0 = (x_n − r·y_t)/(1 − r) has the clean posterior mean E[x_0 | x_t] as its minimiser. Returns (x_t, the target
    in the prediction's space, per-example weights (1 − r)², which make the loss the ambient one,
    |(1 − r)·x̂_0 + r·y_t − x_n|², up to the target's scale). Clean examples (σ_n = 0) get the usual x_t, target and
    weight 1. x_n, eps: (B, ...); sigma_n, abar: (B,)."""
    shape = (-1, *([1] * (x_n.ndim - 1)))
    a, sn2 = abar.reshape(shape), sigma_n.reshape(shape) ** 2
    x_t = a.sqrt() * x_n + (1 - a * (1 + sn2)).clamp_min(0).sqrt() * eps
    r = sn2 * a / (1 - a).clamp_min(1e-12)
    x0_tilde = (x_n - r * x_t / a.sqrt().clamp_min(1e-12)) / (1 - r)
    eps_tilde = (x_t - a.sqrt() * x0_tilde) / (1 - a).sqrt().clamp_min(1e-12)
    return x_t, target(x0_tilde, eps_tilde, abar, prediction), ((1 - r) ** 2).reshape(-1)


def immiscible(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Immiscible diffusion (Li et al. 2024): reorder the batch's noise so that the total distance between each
    example and its noise is least (a linear assignment, scipy's linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.reshape(len(x0), -1), eps.reshape(len(eps), -1)).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return eps[torch.as_tensor(cols, device=eps.device)]


def transition_weights(p_clean: torch.Tensor, flips: torch.Tensor, told: torch.Tensor) -> torch.Tensor:
    """Label-noise robust diffusion's weights (Na et al. 2024, TDSM): p(y | ỹ, x_t) ∝ T[y, ỹ]·p(y | x_t) for each
    example told class ỹ, T[i, j] = P(told j | true i), p(y | x_t) from a classifier of the noised input.
    p_clean: (B, C); told: (B,) -> (B, C), rows summing to 1."""
    w = p_clean * flips[:, told].T
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


def transition_output(model: Callable, x: torch.Tensor, t: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_y w_y · model(x, t, y) over every class y (weights (B, C)): the score conditioned on a noisy class is the
    posterior mixture of the clean classes' scores, and every prediction target is affine in the score with
    coefficients that do not depend on the class, so the mixture carries over to ε, v and x_0 alike. The C classes
    go through the model as one batch of B·C."""
    b, c = len(x), weights.shape[1]
    y = torch.arange(c, device=x.device).repeat_interleave(b)
    out = model(x.repeat(c, *([1] * (x.ndim - 1))), t.repeat(c), y).reshape(c, b, *x.shape[1:])
    return torch.einsum("bc,cb...->b...", weights.to(out.dtype), out)


def nearest_class(x: torch.Tensor, ref: torch.Tensor, ref_y: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The class of each row of x by a vote of its k nearest rows of ref (labels ref_y; ties to the smaller class)."""
    near = torch.cdist(x.reshape(len(x), -1).float(), ref.reshape(len(ref), -1).float()).topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(ref_y[near], int(ref_y.max()) + 1).sum(1)
    return votes.argmax(1)


def times(schedule: sched.Schedule, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """The sampling times, noisiest first, then 0: a discrete schedule's grid by `spacing`, else evenly spaced."""
    if schedule.steps is not None:
        t = sched.timesteps(steps, spacing, schedule.steps)
    else:
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError("steps", steps, "an integer >= 1")
        t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def sample(model: Callable, schedule: sched.Schedule, shape: tuple, steps: int, generator: torch.Generator,
           sampler: str = "ddim", prediction: str = "epsilon", spacing: str = "trailing", eta: float = 0.0,
           device="cpu", callback: Callable | None = None, clip_x0: float = 0.0,
           x_init: torch.Tensor | None = None) -> torch.Tensor:
    """Draw samples: model(x_t, t) -> prediction, t a (n,) float tensor in [0, 1]. callback(i, x̂_0) is called
    after each step (samples appearing as sampling proceeds). clip_x0 > 0 clips x̂_0 to ±clip_x0 and recomputes ε̂
    from it (DDPM's clip_sample: ε-prediction at near-zero SNR otherwise amplifies its error by 1/√ᾱ). x_init: the
    state at the first sampling time (`one_more_step`'s); default pure noise from `generator`."""
    if sampler not in SAMPLERS:
        raise ConfigError("sampler", sampler, f"one of {', '.join(SAMPLERS)}")
    if eta < 0:
        raise ConfigError("eta", eta, "a number >= 0")
    ts = times(schedule, steps, spacing)
    abars = schedule.alpha_bar(ts).float().to(device)
    if x_init is not None and tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, the samples {tuple(shape)}")
    x = (torch.randn(shape, generator=generator) if x_init is None else x_init).to(device)  # at the first time
    n = shape[0]

    def predict(x, i):
        t = torch.full((n,), float(ts[i]), device=device)
        a = abars[i]
        x0, eps = split(model(x, t), x, a.expand(n), prediction)
        if clip_x0 > 0:
            x0 = x0.clamp(-clip_x0, clip_x0)
            if a < 1:
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return x0, eps

    for i in range(len(ts) - 1):
        a_t, a_s = abars[i], abars[i + 1]
        x0, eps = predict(x, i)
        if sampler in ("ddpm", "ddim"):
            e = 1.0 if sampler == "ddpm" else eta
            sigma = e * torch.sqrt((1 - a_s) / (1 - a_t).clamp_min(1e-12)) * torch.sqrt((1 - a_t / a_s).clamp_min(0))
            noise = torch.randn(shape, generator=generator).to(device) if float(sigma) > 0 else 0.0
            x = a_s.sqrt() * x0 + torch.sqrt((1 - a_s - sigma**2).clamp_min(0)) * eps + sigma * noise
        else:  # the probability-flow ODE in x̃ = x/√ᾱ, σ = √((1 − ᾱ)/ᾱ): dx̃/dσ = ε̂
            s_t = torch.sqrt((1 - a_t) / a_t.clamp_min(1e-20))
            s_s = torch.sqrt((1 - a_s) / a_s)
            if s_t > SIGMA_MAX_ODE:  # from (near-)pure noise: step to σ_s along x̂_0 (the first-order step, as
                x = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps  # EDM caps σ at 80; a slope average is unstable)
                if callback is not None:
                    callback(i, x0)
                continue
            xt = x / a_t.sqrt()
            xs = xt + (s_s - s_t) * eps
            if sampler == "heun" and a_s < 1:  # average the slopes at both ends (not at σ = 0)
                _, eps2 = predict(xs * a_s.sqrt(), i + 1)
                xs = xt + (s_s - s_t) * (eps + eps2) / 2
            x = xs * a_s.sqrt()
        if callback is not None:
            callback(i, x0)
    return x


def one_more_step(oms: Callable, schedule: sched.Schedule, steps: int, spacing: str, z: torch.Tensor,
                  request: torch.Tensor) -> torch.Tensor:
    """Hu et al. 2024's One More Step: the state at the sampler's first time from pure noise z, by one DDIM step
    from zero SNR. There x_t is the noise itself, so ε̂ = z exactly; the small net `oms(z, request)` predicts x̂_0
    (at zero SNR the best it can do is E[x_0 | request]: the request, a prompt's stand-in, is what it can use), and
    x = √ᾱ·x̂_0 + √(1 − ᾱ)·z at the first sampling time — a frozen model trained with non-zero terminal SNR then
    starts where its training put signal."""
    a = schedule.alpha_bar(times(schedule, steps, spacing)[:1]).float().to(z.device)
    return a.sqrt() * oms(z, request) + (1 - a).sqrt() * z


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance between two samples (n, d) (equal n): √(mean over random directions of the
    mean squared difference of the sorted projections)."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    dirs = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(0).values, (b @ dirs).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel exp(−‖x − y‖² / (2h²)), h the median distance of the
    pooled sample unless given (biased estimator)."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    pooled = torch.cat([a, b])
    d = torch.cdist(pooled, pooled)
    h = bandwidth or float(d[d > 0].median())
    k = torch.exp(-(d**2) / (2 * h * h))
    n = len(a)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def time_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000, as DDPM's step index)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    arg = 1000 * t[:, None].float() * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
