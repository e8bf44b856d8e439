"""Results over seeds: one way of saying mean ± sd, n and a 95 % interval, everywhere."""
import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from workbench import stats


def test_spread_is_the_mean_the_sample_sd_and_the_t_interval():
    x = [0.1, 0.4, 0.35, np.nan, 0.2]  # a diverged seed (nan) is left out
    s = stats.spread(x)
    v = np.array([0.1, 0.4, 0.35, 0.2])
    lo, hi = sps.t.interval(0.95, 3, loc=v.mean(), scale=sps.sem(v))
    assert (s.mean, s.sd, s.n) == (pytest.approx(v.mean()), pytest.approx(v.std(ddof=1)), 4)
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert str(s) == f"{v.mean():+.3f} ± {v.std(ddof=1):.3f} (95% CI [{lo:+.3f}, {hi:+.3f}], n=4)"
    assert stats.spread([2.0]).n == 1 and np.isnan(stats.spread([2.0]).sd) and str(stats.spread([2.0])) == "+2.000 (n=1)"
    assert stats.spread([np.nan]).n == 0


def test_over_a_dim_agrees_with_spread_cell_by_cell():
    rng = np.random.default_rng(0)
    da = xr.DataArray(rng.normal(size=(3, 5)), dims=("lr", "seed"), coords={"lr": [0.1, 0.2, 0.3]})
    da[1, 2] = np.nan
    out = stats.over(da)
    for i in range(3):
        s = stats.spread(da.values[i])
        assert float(out["mean"][i]) == pytest.approx(s.mean) and int(out["n"][i]) == s.n
        assert float(out["lo"][i]) == pytest.approx(s.lo) and float(out["hi"][i]) == pytest.approx(s.hi)
