"""Diffusion noise schedules: alpha_bar(t) and logSNR(t) for continuous t in [0, 1], t = 0 clean.

Names: linear, scaled_linear and cosine (Nichol & Dhariwal) are discrete DDPM schedules; chen_cosine and sigmoid are
Chen 2023's families; laplace and cauchy Hang et al. 2024's; shifted_cosine the continuous cosine, shifted or
scaled; edm Karras et al. 2022's.

alpha_bar is the signal variance (x_t = √ᾱ x_0 + √(1 − ᾱ) ε) and logsnr = log(ᾱ / (1 − ᾱ)), so ᾱ = sigmoid(logsnr).
Discrete DDPM schedules are exposed through the same interface: ᾱ(i/T) = ∏_{s=1..i} (1 − β_s) for i = 0..T, linear in
logSNR between grid points (linear in ᾱ on the first interval, whose left end has infinite logSNR).
Each schedule's formula is in its function's docstring; `get(name, **params)` builds one, with the parameters named
as in its paper; `timesteps(n, spacing)` gives the sampling times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError

SPACINGS = ("linspace", "leading", "trailing")


@dataclass(frozen=True)
class Schedule:
    """A schedule: its name, parameters, and logSNR as a function of t (a small immutable object)."""

    name: str
    params: dict = field(default_factory=dict)
    _logsnr: Callable = field(default=None, repr=False, compare=False)
    grid: torch.Tensor | None = field(default=None, repr=False, compare=False)  # discrete: ᾱ at i/T, i = 0..T

    @property
    def steps(self) -> int | None:
        return None if self.grid is None else len(self.grid) - 1

    def logsnr(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.grid is not None:
            return torch.logit(self.alpha_bar(t))
        return self._logsnr(t)

    def alpha_bar(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.grid is not None:
            return _interpolate(self.grid, t)
        return torch.sigmoid(self._logsnr(t))

    def sigma(self, t) -> torch.Tensor:
        """The noise-to-signal ratio σ = √((1 − ᾱ) / ᾱ) = exp(−logsnr / 2) (EDM's σ)."""
        return torch.exp(-self.logsnr(t) / 2)


def _interpolate(grid: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ at t from its values at i/T: linear in logSNR between grid points, linear in ᾱ on [0, 1/T]."""
    T = len(grid) - 1
    if ((t < 0) | (t > 1)).any():
        raise ConfigError("t", float(t[(t < 0) | (t > 1)][0]), "times in [0, 1]")
    pos = t * T
    i = torch.clamp(pos.floor().long(), max=T - 1)
    w = pos - i
    a0, a1 = grid[i], grid[i + 1]
    with torch.no_grad():
        l0, l1 = torch.logit(a0), torch.logit(a1)
    inner = torch.sigmoid(l0 + w * (l1 - l0))
    linear = a0 + w * (a1 - a0)  # where an end has infinite logSNR (ᾱ(0) = 1; ᾱ(1) = 0 at zero terminal SNR)
    out = torch.where(torch.isfinite(l0) & torch.isfinite(l1), inner, linear)
    out = torch.where(w == 0, a0, out)  # exact at the grid points (also where ᾱ = 0 or 1)
    return torch.where((w == 1) | (pos == T), grid[torch.clamp(i + 1, max=T)], out)


# -- discrete DDPM schedules --------------------------------------------------------------------------------------
def _from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM (Ho et al. 2020): β_i linear from beta_start to beta_end over T steps."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's: √β_i linear from √beta_start to √beta_end over T steps."""
    return torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=torch.float64) ** 2


def nichol_cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021: ᾱ(t) = f(t)/f(0), f(t) = cos²((t + s)/(1 + s) · π/2); β_i = 1 − ᾱ(i/T)/ᾱ((i−1)/T),
    clipped to max_beta as they do (so ᾱ(1) is small but not zero)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


def rescale_zero_terminal_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024 ("Common diffusion noise schedules and sample steps are flawed"), Algorithm 1, on the grid
    ᾱ(i/T), i = 0..T: shift √ᾱ (over i = 1..T) so its last value is 0 and scale it so its first is unchanged."""
    a = alpha_bar[1:].sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)
    return torch.cat([alpha_bar[:1], a**2])


# -- continuous schedules (logSNR) ------------------------------------------------------------------------------
def chen_cosine_logsnr(t, start: float = 0.0, end: float = 1.0, tau: float = 1.0, b: float = 1.0,
                       clip_min: float = 1e-9) -> torch.Tensor:
    """Chen 2023 ("On the importance of noise scheduling for diffusion models"): γ(t) = (v_end − v(t)) / (v_end −
    v_start), v(t) = cos((start + t(end − start))·π/2)^(2τ), clipped to [clip_min, 1]; input scaling b shifts
    logSNR by 2·log b."""
    v = lambda x: torch.cos(torch.as_tensor(x, dtype=torch.float64) * math.pi / 2) ** (2 * tau)  # noqa: E731
    gamma = (v(end) - v(start + t * (end - start))) / (v(end) - v(start))
    gamma = torch.clamp(gamma, clip_min, 1.0)
    return torch.logit(gamma) + 2 * math.log(b)


def sigmoid_logsnr(t, start: float = -3.0, end: float = 3.0, tau: float = 1.0, b: float = 1.0,
                   clip_min: float = 1e-9) -> torch.Tensor:
    """Chen 2023: γ(t) = (v_end − v(t)) / (v_end − v_start), v(t) = sigmoid((start + t(end − start))/τ), clipped to
    [clip_min, 1]; input scaling b shifts logSNR by 2·log b."""
    v = lambda x: torch.sigmoid(torch.as_tensor(x, dtype=torch.float64) / tau)  # noqa: E731
    gamma = (v(end) - v(start + t * (end - start))) / (v(end) - v(start))
    gamma = torch.clamp(gamma, clip_min, 1.0)
    return torch.logit(gamma) + 2 * math.log(b)


def laplace_logsnr(t, mu: float = 0.0, b: float = 0.5) -> torch.Tensor:
    """Hang et al. 2024 ("Improved noise schedule for diffusion training"): λ(t) = μ − b·sgn(0.5 − t)·ln(1 − 2|t − 0.5|)."""
    return mu - b * torch.sign(0.5 - t) * torch.log1p(-2 * (t - 0.5).abs())


def cauchy_logsnr(t, mu: float = 0.0, gamma: float = 1.0) -> torch.Tensor:
    """Hang et al. 2024: λ(t) = μ + γ·tan(π/2 · (1 − 2t))."""
    out = mu + gamma * torch.tan(math.pi / 2 * (1 - 2 * t))
    return torch.where(t <= 0, math.inf, torch.where(t >= 1, -math.inf, out))


def cosine_logsnr(t, shift: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """The continuous cosine schedule, λ(t) = −2·log tan(πt/2), scaled by `scale` and shifted by 2·log(shift)
    (Hoogeboom et al. 2023's shifted cosine; Hang et al.'s cosine-scaled baseline)."""
    return scale * (-2 * torch.log(torch.tan(math.pi * t / 2))) + 2 * math.log(shift)


def edm_logsnr(t, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022: σ(t) = (σ_min^(1/ρ) + t(σ_max^(1/ρ) − σ_min^(1/ρ)))^ρ (t = 0 is σ_min), ᾱ = 1/(1 + σ²), so
    logSNR = −2·log σ."""
    sig = (sigma_min ** (1 / rho) + t * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho
    return -2 * torch.log(sig)


_DISCRETE = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": nichol_cosine_betas}
_CONTINUOUS = {"chen_cosine": chen_cosine_logsnr, "sigmoid": sigmoid_logsnr, "laplace": laplace_logsnr,
               "cauchy": cauchy_logsnr, "shifted_cosine": cosine_logsnr, "edm": edm_logsnr}
NAMES = tuple(_DISCRETE) + tuple(_CONTINUOUS)


def _check(name: str, p: dict) -> None:
    positive = {"tau", "b", "gamma", "rho", "sigma_min", "sigma_max", "T", "shift", "scale", "beta_start",
                "beta_end", "s"}
    for k, v in p.items():
        if k in positive and not v > 0:
            raise ConfigError(k, v, f"a number > 0 for schedule {name!r}")
    if "start" in p and "end" in p and not p["start"] < p["end"]:
        raise ConfigError("start", p["start"], f"a value below end = {p['end']}")
    if "sigma_min" in p and not p["sigma_min"] < p["sigma_max"]:
        raise ConfigError("sigma_min", p["sigma_min"], f"a value below sigma_max = {p['sigma_max']}")
    if "beta_start" in p and not p["beta_start"] < p["beta_end"] < 1:
        raise ConfigError("beta_start", p["beta_start"], f"0 < beta_start < beta_end = {p['beta_end']} < 1")
    if name == "chen_cosine" and not 0 <= p["start"] < p["end"] <= 1:
        raise ConfigError("start", p["start"], "0 <= start < end <= 1 for chen_cosine")
    if "T" in p and (not isinstance(p["T"], int) or p["T"] < 1):
        raise ConfigError("T", p["T"], "an integer >= 1")


def get(name: str, zero_terminal_snr: bool = False, **params) -> Schedule:
    """A schedule by name (one of NAMES) with its own parameters as keyword arguments. zero_terminal_snr=True
    applies Lin et al.'s rescale (discrete schedules)."""
    import inspect

    allowed = parameters(name)
    fn = _DISCRETE.get(name) or _CONTINUOUS[name]
    sig = inspect.signature(fn)
    for k in params:
        if k not in allowed:
            raise ConfigError(k, params[k], f"a parameter of schedule {name!r}: {', '.join(allowed)}")
    full = {k: v.default for k, v in sig.parameters.items() if k != "t"}
    full.update(params)
    _check(name, full)
    if name in _DISCRETE:
        grid = _from_betas(fn(**full))
        if zero_terminal_snr:
            grid = rescale_zero_terminal_snr(grid)
        return Schedule(name, {**full, "zero_terminal_snr": zero_terminal_snr}, None, grid)
    if zero_terminal_snr:
        raise ConfigError("zero_terminal_snr", True, f"False for the continuous schedule {name!r} "
                                                     f"(the rescale is for discrete ones: {', '.join(_DISCRETE)})")
    return Schedule(name, full, lambda t: fn(t, **full))


def timesteps(n: int, spacing: str = "trailing", T: int = 1000) -> torch.Tensor:
    """The n sampling times, from noisiest to cleanest, as t = i/T (Lin et al. 2024, Table 2, 1-indexed):
    linspace: round(linspace(0, T − 1, n)) + 1; leading: arange(n)·(T // n) + 1; trailing: round(arange(T, 0, −T/n))."""
    if not isinstance(n, int) or not 1 <= n <= T:
        raise ConfigError("steps", n, f"an integer in [1, {T}]")
    if spacing == "linspace":
        i = torch.linspace(0, T - 1, n, dtype=torch.float64).round() + 1
    elif spacing == "leading":
        i = torch.arange(n, dtype=torch.float64) * (T // n) + 1
    elif spacing == "trailing":
        i = torch.arange(T, 0, -T / n, dtype=torch.float64).round()
    else:
        raise ConfigError("spacing", spacing, f"one of {', '.join(SPACINGS)}")
    return i.flip(0) / T if spacing != "trailing" else i / T


def parameters(name: str) -> tuple[str, ...]:
    """The parameters schedule `name` takes (as `get` accepts them)."""
    import inspect

    if name not in NAMES:
        raise ConfigError("schedule", name, f"one of {', '.join(NAMES)}")
    fn = _DISCRETE.get(name) or _CONTINUOUS[name]
    return tuple(k for k in inspect.signature(fn).parameters if k != "t")


def parse_params(text: str, name: str, field: str = "schedule_params") -> dict:
    """'b=0.5, tau=0.7' -> {'b': 0.5, 'tau': 0.7}, checked against schedule `name`'s parameters (T an integer).
    A bad pair is a ConfigError naming `field`, the text and what is allowed."""
    allowed = parameters(name)
    out: dict = {}
    for part in filter(None, (p.strip() for p in (text or "").replace(";", ",").split(","))):
        key, eq, raw = (s.strip() for s in part.partition("="))
        if not eq or key not in allowed:
            raise ConfigError(field, text, f"comma-separated name=value pairs of the parameters of schedule "
                                           f"{name!r}: {', '.join(allowed)}")
        try:
            out[key] = int(raw) if key == "T" else float(raw)
        except ValueError:
            raise ConfigError(field, text, f"a number for {key}{' (an integer)' if key == 'T' else ''}") from None
        if key in out and not math.isfinite(out[key]):
            raise ConfigError(field, text, f"a finite number for {key}")
    return out


def time_at(schedule: Schedule, logsnr: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """The time t in [0, 1] at which `schedule` has log-SNR `logsnr` (its inverse; logSNR falls with t), by
    bisection: what a training distribution over noise levels that is not the sampler's (Hang et al. 2024) conditions
    the denoiser on. Levels beyond the schedule's ends map to its ends."""
    lam = torch.as_tensor(logsnr, dtype=torch.float64)
    lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = schedule.logsnr(mid) > lam  # still less noisy than wanted: the answer lies later
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return (lo + hi) / 2
