"""Categorical sampling by Gumbel-max in a given float type (Zheng et al. 2024, "Masked diffusion models are
secretly time-agnostic masked models and exploit inaccurate categorical sampling").

argmax_i(l_i + g_i) with g_i = −log(−log u_i) draws token i with probability softmax(l)_i when the u_i are exact
uniforms. torch.rand draws them on a grid — k / 2^24 in float32, k / 2^53 in float64 — so the largest Gumbel value
a float32 uniform can give is −log(−log(1 − 2^−24)) ≈ 16.6: a token more than about that many nats below the
leader can never win, and tokens somewhat less far below win less often than they should. That lowers the tail
mass, i.e. the effective temperature.

The probe's distribution: one head token at logit 0 and `n_tail` tokens at logit −gap (their exact share is
n_tail·e^−gap / (1 + n_tail·e^−gap)). `gumbel_max` is the sampler as written in practice (a uniform per token);
`tail_draws` draws the same thing without a uniform per tail token — the best of n_tail grid uniforms has the law
P(max ≤ k / M) = ((k + 1) / M)^n_tail, sampled exactly by inverting it — so millions of draws over thousands of tokens
cost two uniforms each; `tail_share_exact` is the sampler's exact expectation on the float32 grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError

#: the grid torch.rand draws on: k / 2^bits
GRID_BITS = {"float32": 24, "float64": 53}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: the float types a sampler may draw in (the probe's exact expectations know the first two's grids only)
SAMPLER_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                  "bfloat16": torch.bfloat16}


def _dtype(name: str, allowed: dict = DTYPES):
    if name not in allowed:
        raise ConfigError("uniforms", name, f"one of {', '.join(allowed)}")
    return allowed[name]


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel values from uniforms, in the uniforms' float type."""
    return -torch.log(-torch.log(u))


def gumbel_argmax(logits: torch.Tensor, uniforms: str, generator: torch.Generator) -> torch.Tensor:
    """One Gumbel-max draw per row of `logits` (..., V), the logits and the Gumbel noise in the named float type (as a
    sampler written in that type computes them): argmax over the last axis of logits + (−log(−log u))."""
    dt = _dtype(uniforms, SAMPLER_DTYPES)
    u = torch.rand(logits.shape, dtype=dt, generator=generator).to(logits.device)
    return (logits.to(dt) + gumbel(u)).argmax(-1)


def gumbel_max(logits: torch.Tensor, n: int, uniforms: str, generator: torch.Generator,
               chunk: int = 4096) -> torch.Tensor:
    """n categorical draws from softmax(logits) by Gumbel-max with uniforms of the named float type; returns the
    count of each token (ties go to the lowest index, as argmax does)."""
    dt = _dtype(uniforms)
    logits = logits.to(dt)
    counts = torch.zeros(len(logits), dtype=torch.long)
    for start in range(0, n, chunk):
        u = torch.rand((min(chunk, n - start), len(logits)), dtype=dt, generator=generator)
        counts += torch.bincount((logits + gumbel(u)).argmax(1), minlength=len(logits))
    return counts


def tail_draws(gap: float, n_tail: int, n: int, uniforms: str, generator: torch.Generator,
               chunk: int = 1 << 20) -> int:
    """How many of n Gumbel-max draws (head at 0, n_tail tokens at −gap, uniforms of the named type) pick a tail
    token: the head's uniform and the best tail uniform drawn on torch.rand's grid, the Gumbel values computed in
    that float type, a tie going to the head (it comes first)."""
    dt = _dtype(uniforms)
    size = 2 ** GRID_BITS[uniforms]
    wins = 0
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        head = torch.rand(m, dtype=dt, generator=generator)
        v = torch.rand(m, dtype=torch.float64, generator=generator)
        # the largest of n_tail grid uniforms, by inverting its CDF ((k + 1) / size)^n_tail
        k = torch.ceil(size * torch.exp(torch.log1p(-v) / n_tail)) - 1  # 1 − v: uniform on (0, 1]
        best = (k.clamp(0, size - 1) / size).to(dt)
        wins += int((gumbel(best) - gap > gumbel(head)).sum())
    return wins


def tail_share_exact(gap: float, n_tail: int, uniforms: str | None) -> float:
    """The exact share of draws that pick a tail token: softmax's (uniforms=None, and float64's up to 1e-15), or
    the Gumbel-max sampler's with float32 uniforms, summed over every value of the head's uniform on the 2^24 grid."""
    if uniforms is None or uniforms == "float64":
        w = n_tail * math.exp(-gap)
        return w / (1 + w)
    _dtype(uniforms)
    size = 2 ** GRID_BITS[uniforms]
    total = 0.0
    for start in range(0, size, 1 << 22):  # in blocks: 2^24 values at once would take a few hundred MB
        u = torch.arange(start, min(size, start + (1 << 22)), dtype=torch.float64) / size
        g_head = gumbel(u.float()).double()  # the head's Gumbel as the float32 sampler computes it
        # a tail uniform loses when its Gumbel ≤ gap + g_head, i.e. when it is ≤ tau on the grid
        tau = torch.exp(-torch.exp(-(gap + g_head)))
        below = torch.clamp(torch.floor(tau * size) + 1, max=size) / size
        total += float((1 - below.pow(n_tail)).sum())
    return total / size


def effective_temperature(share: float, gap: float, n_tail: int) -> float:
    """The temperature τ at which exact sampling of softmax(l / τ) gives the tail this share."""
    if not 0 < share < 1:
        return float("nan")
    return gap / math.log(n_tail * (1 - share) / share)


def standard_error(share: float, n: int) -> float:
    return float(np.sqrt(share * (1 - share) / n))
