"""The masked diffusion study: its sampler draws what the model says (exactly, in float64), its caching changes no
draw, its ELBO is exact where it can be computed by hand, and the sampler's float type is a dial."""
import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import ConfigError
from workbench.probes.categorical import gumbel_argmax
from workbench.studies import get as get_study
from workbench.studies.masked_diffusion import alpha, entropy_per_pixel, nelbo, sample, sample_first_hitting

L, V = 6, 5


class Fixed(torch.nn.Module):
    """A 'model' whose every pixel's level distribution is fixed, whatever the other tokens (counting its rows)."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.rows = logits, 0

    def forward(self, tokens):
        self.rows += len(tokens)
        return self.logits.expand(len(tokens), *self.logits.shape).clone()


def _logits(gap=3.0):
    g = torch.Generator().manual_seed(0)
    return torch.randn(L, V, generator=g) * gap


@pytest.mark.parametrize("sampler, schedule, steps", [("ancestral", "linear", 1), ("ancestral", "linear", 40),
                                                      ("ancestral", "cosine", 25), ("first_hitting", None, None)])
def test_the_sampler_in_float64_draws_each_pixel_from_the_models_distribution(sampler, schedule, steps):
    """Whatever the steps and schedule, every pixel ends unmasked and at level v with the model's p(v); the
    first-hitting sampler too."""
    net, n, g = Fixed(_logits()), 20_000, torch.Generator().manual_seed(1)
    if sampler == "first_hitting":
        x = sample_first_hitting(net, n, L, V, "float64", 1.0, g, "cpu")
        assert net.rows == n * L  # one net call a token
    else:
        x = sample(net, n, L, V, steps, schedule, "float64", 1.0, g, "cpu")
    assert (x < V).all()
    p = torch.softmax(net.logits.double(), -1)
    freq = torch.nn.functional.one_hot(x, V).double().mean(0)
    assert (freq - p).abs().max() < 5 * (p * (1 - p) / n).sqrt().max() + 1e-3, (freq, p)


def test_the_sampler_computes_logits_again_only_for_sequences_that_changed_and_draws_the_same():
    """The net is time-agnostic: reusing a sequence's logits until one of its tokens is unmasked changes no draw
    (against a sampler that calls the net at every step) and calls it at most L + 1 times a sequence."""
    net, n, steps = Fixed(_logits()), 300, 200
    x = sample(net, n, L, V, steps, "linear", "float32", 1.0, torch.Generator().manual_seed(2), "cpu")
    assert net.rows <= n * (L + 1)

    g, ref = torch.Generator().manual_seed(2), torch.full((n, L), V)  # every step computes every sequence's logits
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    for j in range(steps):
        a_t, a_s = alpha("linear", ts[j]), alpha("linear", ts[j + 1])
        logp = torch.log_softmax(net(ref).double(), -1)
        masked = ref == V
        lq = torch.cat([logp[masked] + torch.log((a_s - a_t) / (1 - a_t)),
                        torch.log((1 - a_s) / (1 - a_t)).expand(int(masked.sum()), 1)], 1)
        new = torch.full_like(ref, V)
        new[masked] = gumbel_argmax(lq, "float32", g)
        ref = torch.where(masked & (new < V), new, ref)
    assert torch.equal(x, ref)


def test_in_float16_the_sampler_draws_rare_levels_too_seldom_the_more_so_the_more_steps():
    """The mechanism (Zheng et al. 2024): each step's level choices are unlikely next to staying masked, and a
    coarse float type's Gumbel noise cannot reach them: the entropy falls below float64's, more at more steps."""
    net, n = Fixed(_logits(gap=2.0)), 4000

    def entropy(uniforms, steps):
        return entropy_per_pixel(sample(net, n, L, V, steps, "linear", uniforms, 1.0,
                                        torch.Generator().manual_seed(3), "cpu"), V)

    exact = entropy("float64", 256)
    p = torch.softmax(net.logits.double(), -1)
    assert abs(exact - float(-(p * p.log()).sum(1).mean())) < 0.02  # float64: the model's own entropy
    few, many = exact - entropy("float16", 8), exact - entropy("float16", 256)
    assert many > 0.05 and many > few, (few, many)
    # the first-hitting sampler draws among the levels only: no choice against staying masked to get wrong
    fhs = entropy_per_pixel(sample_first_hitting(net, n, L, V, "float16", 1.0, torch.Generator().manual_seed(3),
                                                 "cpu"), V)
    assert abs(fhs - float(-(p * p.log()).sum(1).mean())) < 0.03 < many, (fhs, many)


def test_the_negative_elbo_of_a_context_free_model_is_its_cross_entropy():
    """For a model that ignores the other tokens the ELBO is exact: Σ_t weight·P(masked)·CE integrates to the CE,
    for either schedule (Monte Carlo over 200,000 draws of t and the masks)."""
    logits = _logits()
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(logits.double(), -1)
    x0 = torch.multinomial(p, 200_000, replacement=True, generator=g).T  # (n, L)
    ce = float(-torch.log_softmax(logits.double(), -1)[torch.arange(L), x0].mean())
    for schedule in ("linear", "cosine"):
        t = torch.rand(len(x0), generator=g, dtype=torch.float64).clamp_min(1e-4)
        masked = torch.rand(len(x0), L, generator=g) < (1 - alpha(schedule, t))[:, None]
        est = float(nelbo(Fixed(logits), x0, t, masked, V, schedule).mean())
        assert abs(est - ce) < 0.03 * ce, (schedule, est, ce)


@pytest.mark.parametrize("sampler", ["ancestral", "first_hitting"])
def test_a_run_measures_diversity_against_held_out_images_and_bad_input_is_refused(sampler):
    run = wb.run("masked_diffusion", progress=False, sampler=sampler, **get_study("masked_diffusion").tiny)
    ds = run.ds
    assert run.status == "done"
    for name in ("test_nelbo", "sample_entropy", "tail_share", "judge_nll", "sw"):
        assert np.isfinite(ds[name].values).all(), name
    assert 0 < float(ds.data_entropy[-1]) < np.log(16)
    assert ds.samples.shape[-1] == 64 and float(ds.level_hist.sum("level")) == pytest.approx(1.0)
    for dial, value in (("uniforms", "float8"), ("levels", 1), ("levels", 18), ("temperature", 0.0),
                        ("mask_schedule", "log"), ("sampler", "ddim")):
        with pytest.raises(ConfigError) as e:
            wb.run("masked_diffusion", **{dial: value})
        assert e.value.field == dial
