"""Gumbel-max categorical sampling in float32 and float64 (workbench.probes.categorical)."""
import math

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError
from workbench.probes import categorical as cat


def _within(count, n, p, k=4.0):
    return abs(count / n - p) < k * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("uniforms", ["float32", "float64"])
def test_gumbel_max_draws_the_softmax_where_the_logits_are_close(uniforms):
    logits = torch.tensor([0.0, -1.0, -2.0, -4.0])
    n = 200_000
    counts = cat.gumbel_max(logits, n, uniforms, torch.Generator().manual_seed(0))
    p = torch.softmax(logits.double(), 0).numpy()
    assert int(counts.sum()) == n
    for c, q in zip(counts.tolist(), p):
        assert _within(c, n, q), (uniforms, counts, p)


@pytest.mark.parametrize("uniforms", ["float32", "float64"])
def test_the_grouped_tail_draw_has_the_law_of_a_uniform_per_token(uniforms):
    """tail_draws (the best tail uniform drawn by inverting its law) against gumbel_max with a uniform per token."""
    gap, n_tail, n = 3.0, 63, 100_000
    logits = torch.cat([torch.zeros(1), torch.full((n_tail,), -gap)])
    direct = int(cat.gumbel_max(logits, n, uniforms, torch.Generator().manual_seed(1))[1:].sum())
    grouped = cat.tail_draws(gap, n_tail, n, uniforms, torch.Generator().manual_seed(2))
    p = cat.tail_share_exact(gap, n_tail, None)
    assert _within(direct, n, p) and _within(grouped, n, p), (direct, grouped, p * n)


def test_float32_uniforms_cut_the_gumbel_tail_and_float64_do_not():
    top32 = float(cat.gumbel(torch.tensor(1 - 2.0**-24)))
    assert top32 == pytest.approx(-math.log(2.0**-24), rel=1e-4)  # ≈ 16.6: no float32 Gumbel goes higher
    for gap in (2.0, 8.0):  # far from the cut: the float32 sampler is exact to within a part in 10^4
        assert cat.tail_share_exact(gap, 100, "float32") == pytest.approx(cat.tail_share_exact(gap, 100, None),
                                                                          rel=1e-4)
    shares = [cat.tail_share_exact(g, 4095, "float32") / cat.tail_share_exact(g, 4095, None) for g in (14, 15, 16)]
    assert shares[0] < 1 and np.all(np.diff(shares) < 0)  # the farther below the leader, the more is lost
    assert cat.tail_share_exact(15.0, 4095, "float64") == cat.tail_share_exact(15.0, 4095, None)
    n = 2_000_000  # the sampler lands on its exact expectation, below softmax's
    drawn = cat.tail_draws(16.0, 4095, n, "float32", torch.Generator().manual_seed(3))
    assert _within(drawn, n, cat.tail_share_exact(16.0, 4095, "float32"))
    assert not _within(drawn, n, cat.tail_share_exact(16.0, 4095, None))
    t = cat.effective_temperature(cat.tail_share_exact(16.0, 4095, "float32"), 16.0, 4095)
    assert 0.9 < t < 1.0 and cat.effective_temperature(cat.tail_share_exact(16.0, 4095, None), 16.0, 4095) == \
        pytest.approx(1.0)


def test_an_unknown_float_type_is_refused():
    with pytest.raises(ConfigError) as e:
        cat.tail_draws(15.0, 10, 100, "float16", torch.Generator())
    assert e.value.field == "uniforms" and "float32" in str(e.value)
