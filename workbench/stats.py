"""Results over seeds, said one way everywhere: mean ± sample sd, n, and a 95 % t-interval of the mean. The CLI,
the phase diagrams, the sweep panel and the reproduction report all use these (non-finite values are left out:
a diverged seed is counted by its own metric, not averaged in)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float  # sample standard deviation (ddof=1); nan for n < 2
    n: int  # finite values
    lo: float  # the 95 % t-interval of the mean (nan for n < 2)
    hi: float

    def __str__(self) -> str:
        if self.n == 0:
            return "no finite value (n=0)"
        if self.n < 2:
            return f"{self.mean:+.3f} (n=1)"
        return f"{self.mean:+.3f} ± {self.sd:.3f} (95% CI [{self.lo:+.3f}, {self.hi:+.3f}], n={self.n})"


def t95(n: int) -> float:
    """The two-sided 95 % quantile of Student's t with n - 1 degrees of freedom (nan for n < 2)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n >= 2 else float("nan")


def spread(values) -> Spread:
    """Mean ± sd, n and the 95 % interval of the finite values."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Spread(float("nan"), float("nan"), 0, float("nan"), float("nan"))
    mean = float(v.mean())
    if n < 2:
        return Spread(mean, float("nan"), 1, float("nan"), float("nan"))
    sd = float(v.std(ddof=1))
    half = t95(n) * sd / np.sqrt(n)
    return Spread(mean, sd, n, mean - half, mean + half)


def over(da: xr.DataArray, dim: str = "seed") -> xr.Dataset:
    """mean, std (sample), n and the 95 % interval (lo, hi) of `da` over `dim`, per remaining coordinate."""
    n = da.count(dim)
    mean = da.mean(dim)
    std = da.std(dim, ddof=1).where(n > 1)
    half = std * xr.apply_ufunc(np.vectorize(t95, otypes=[float]), n) / np.sqrt(n)
    return xr.Dataset({"mean": mean, "std": std, "n": n, "lo": mean - half, "hi": mean + half})
