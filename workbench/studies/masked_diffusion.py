"""Masked diffusion on tokens: the float type of the categorical sampler sets its temperature.

Zheng et al. 2024 ("Masked diffusion models are secretly time-agnostic masked models and exploit inaccurate
categorical sampling"): a masked diffusion model's ancestral sampler draws, at each of its many steps, every masked
token among the vocabulary and "stay masked" — a categorical draw by Gumbel-max whose token choices have tiny
probabilities next to staying masked. With float32 uniforms the Gumbel noise is cut off near 16.6 and coarse just
below it, so the rare choices are drawn too seldom: the effective temperature drops, samples lose diversity, and a
judge that rewards typical output (their generative perplexity) scores them *better*. The more steps, the smaller
each step's token probabilities and the larger the effect.

Here: sklearn's 8×8 digits with each pixel quantized to `levels` grey levels (a token; 64 tokens an image). The
model is an MLP on the one-hot tokens, the mask a token of its own, with no time input (the masked tokens tell how
far sampling has come), trained on the negative ELBO of continuous-time masked diffusion (Sahoo et al. 2024: the
masked tokens' cross-entropy weighted by −α′(t)/(1 − α(t))). Sampling is the ancestral sampler in `sample_steps`
steps: from t to s every masked pixel draws level v with probability p(v)·(α_s − α_t)/(1 − α_t) and stays masked
with (1 − α_s)/(1 − α_t), by Gumbel-max in the float type of the `uniforms` dial; or (sampler="first_hitting",
Zheng et al.'s) one pixel at a time in a random order, drawn among the levels only: the same law, and no choice
against staying masked for a float type to get wrong. What it measures: the samples' entropy per pixel and their
share of tail levels (where the training images rarely are) against held-out images', an independent-pixel judge's
NLL (lower: more typical), and sliced Wasserstein to held-out images.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import param
import torch
import torch.nn.functional as F

from .. import datasets
from ..engine import diffusion as dif
from ..engine.loop import Plan
from ..engine.measure import DIVERGENCE_METRICS, Metric
from ..models import MaskedTokenNet, init_
from ..probes.categorical import SAMPLER_DTYPES, gumbel_argmax
from .base import Study

SIDE = 8  # digits are 8×8: 64 tokens an image
TAIL = 0.01  # a level that a pixel takes in under 1 % of the training images is in that pixel's tail
ELBO_DRAWS = 8  # masking levels t per held-out image in the held-out negative ELBO (stratified over (0, 1))
T_MIN = 1e-4  # t is kept above this in training (the ELBO's weight is about 1/t)

NELBO = "Negative ELBO (nats per pixel)"
ENTROPY = "Diversity: entropy of each pixel's level (nats, mean over pixels)"
TAIL_GROUP = f"Tail: share of pixels at a level that pixel takes in under {TAIL:.0%} of the training images"
JUDGE = "Judge: NLL per pixel under the training images' pixel frequencies (lower: more typical)"
QUALITY = "Sample quality: sliced Wasserstein to held-out images"


def alpha(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """The share of tokens left unmasked at time t ∈ [0, 1] (α(0) = 1, α(1) = 0): linear 1 − t, cosine cos(πt/2)."""
    return 1 - t if schedule == "linear" else torch.cos(math.pi / 2 * t)


def elbo_weight(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """−α′(t) / (1 − α(t)): the weight of the masked tokens' cross-entropy in the continuous-time negative ELBO."""
    if schedule == "linear":
        return 1 / t
    return (math.pi / 2) * torch.sin(math.pi / 2 * t) / (1 - torch.cos(math.pi / 2 * t))


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images in [-1, 1] to tokens 0 .. levels − 1 (nearest level)."""
    return torch.round((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).long()


def grey(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """Tokens back to grey values in [-1, 1]."""
    return tokens.float() / (levels - 1) * 2 - 1


def nelbo(net, x0: torch.Tensor, t: torch.Tensor, masked: torch.Tensor, levels: int, schedule: str) -> torch.Tensor:
    """Each example's negative ELBO in nats per pixel at its masking level t, with the tokens `masked` masked."""
    logits = net(torch.where(masked, levels, x0))
    ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none").view(x0.shape)
    return (ce * masked).sum(1) / x0.shape[1] * elbo_weight(schedule, t).to(ce.dtype)


@torch.no_grad()
def sample(net, n: int, length: int, levels: int, steps: int, schedule: str, uniforms: str, temperature: float,
           generator: torch.Generator, device) -> torch.Tensor:
    """n token sequences from the ancestral sampler in `steps` steps of t from 1 to 0 (the choices drawn by
    Gumbel-max in the float type `uniforms`). The net is time-agnostic, so a sequence's logits are computed again
    only when one of its tokens was unmasked: the same draws as computing them at every step, at a fraction of
    the cost."""
    x = torch.full((n, length), levels, dtype=torch.long, device=device)
    logp = torch.empty((n, length, levels), dtype=torch.float64, device=device)
    changed = torch.ones(n, dtype=torch.bool, device=device)
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    for j in range(steps):
        a_t, a_s = alpha(schedule, ts[j]), alpha(schedule, ts[j + 1])
        if changed.any():
            logp[changed] = torch.log_softmax(net(x[changed]).double() / temperature, -1)
        masked = x == levels
        choose = math.log((a_s - a_t) / (1 - a_t))  # log of the share of masked tokens unmasked in this step
        stay = math.log((1 - a_s) / (1 - a_t)) if a_s < 1 else -math.inf
        lq = logp[masked] + choose
        lq = torch.cat([lq, torch.full((len(lq), 1), stay, dtype=lq.dtype, device=device)], 1)
        drawn = gumbel_argmax(lq, uniforms, generator)
        new = torch.full_like(x, levels)
        new[masked] = drawn
        unmasked = masked & (new < levels)
        x = torch.where(unmasked, new, x)
        changed = unmasked.any(1)
    return x


@torch.no_grad()
def sample_first_hitting(net, n: int, length: int, levels: int, uniforms: str, temperature: float,
                         generator: torch.Generator, device) -> torch.Tensor:
    """n token sequences from Zheng et al.'s first-hitting sampler: for a time-agnostic model the ancestral sampler's
    only effect of time is the order in which tokens are unmasked, a uniformly random one; so unmask one token at a
    time in a random order, each drawn from the model's distribution by Gumbel-max in the float type `uniforms`.
    The same law as the ancestral sampler at any number of steps (exactly, in float64), `length` net calls a
    sequence, and no draw competes with "stay masked"."""
    x = torch.full((n, length), levels, dtype=torch.long, device=device)
    order = torch.argsort(torch.rand(n, length, generator=generator), dim=1).to(device)
    rows = torch.arange(n, device=device)
    for i in range(length):
        pos = order[:, i]
        logp = torch.log_softmax(net(x).double() / temperature, -1)[rows, pos]  # (n, levels)
        x[rows, pos] = gumbel_argmax(logp, uniforms, generator)
    return x


def entropy_per_pixel(tokens: torch.Tensor, levels: int) -> float:
    """The entropy (nats) of each pixel's level over the images, averaged over pixels."""
    p = F.one_hot(tokens, levels).double().mean(0)  # (L, V)
    return float(-(p * torch.log(p.clamp_min(1e-300))).sum(1).mean())


class MaskedDiffusion(Study):
    key = "masked_diffusion"
    title = "Masked diffusion: the categorical sampler's float type"
    question = ("Does drawing tokens by Gumbel-max in float32 lower a masked diffusion model's sampling temperature — "
                "fewer rare tokens, less diverse samples that a judge finds more typical — the more so the more "
                "sampling steps?")
    paper = ("Zheng et al. 2024 (Masked diffusion models are secretly time-agnostic masked models and exploit "
             "inaccurate categorical sampling)")
    finding = ("In low precision the sampler draws rare levels too seldom: the samples' entropy and tail share fall "
               "below the held-out images' and the judge's NLL with them, as a lower temperature would do.")
    claims = ("mdm_sampling_precision", "gumbel_precision")
    axis = "step"
    metrics = (
        Metric("train_loss", "train negative ELBO (nats per pixel)", "min", group=NELBO),
        Metric("test_nelbo", "held-out negative ELBO (nats per pixel)", "min", group=NELBO),
        Metric("sample_entropy", "samples", group=ENTROPY),
        Metric("data_entropy", "held-out images", group=ENTROPY),
        Metric("tail_share", "samples", group=TAIL_GROUP),
        Metric("data_tail_share", "held-out images", group=TAIL_GROUP),
        Metric("judge_nll", "samples", group=JUDGE),
        Metric("data_judge_nll", "held-out images", group=JUDGE),
        Metric("sw", "sliced Wasserstein of samples to held-out images", "min", group=QUALITY),
        Metric("sw_baseline", "held-out images to other held-out images", group=QUALITY),
        *DIVERGENCE_METRICS,
    )
    headline = "sw"
    tiny = {"steps": 20, "eval_every": 10, "n_train": 200, "n_samples": 64, "width": 32, "sample_steps": 16}
    batchable = frozenset({"seed", "lr"})
    # how the trained net is sampled from: models differing only in these train once
    sampling = frozenset({"uniforms", "temperature", "sampler", "sample_steps"})
    primary = ("uniforms", "sampler", "sample_steps", "temperature", "levels", "mask_schedule", "steps", "seed")
    applies = {"sample_steps": ("sampler", ("ancestral",))}
    presets = {
        "uniforms_vs_steps": {
            "about": "The samples' entropy per pixel for each float type of the sampler's uniforms against the "
                     "number of sampling steps (the held-out images' entropy is the target).",
            "grid": {"sample_steps": [16, 64, 256, 1024], "uniforms": ["float64", "float32", "float16"]},
            "seeds": [0, 1],
            "dials": {},
            "x": "sample_steps", "y": "uniforms", "metric": "sample_entropy", "epoch": "final",
        },
    }

    levels = param.Integer(16, bounds=(2, 17), doc="Grey levels each pixel is quantized to: the tokens' vocabulary "
                                                   "(at most the digits' own 17 values, 0 to 16).")
    uniforms = param.Selector(default="float64", objects=list(SAMPLER_DTYPES),
                              doc="Float type of the sampler's Gumbel-max draws (the uniforms, their Gumbel noise "
                                  "and the log-probabilities they are added to): float64 is exact to 2⁻⁵³; float32, "
                                  "what sampling code commonly uses, cuts the Gumbel noise off at about 16.6.")
    sampler = param.Selector(default="ancestral", objects=["ancestral", "first_hitting"],
                             doc="ancestral: sample_steps steps from t = 1 to 0, every masked pixel choosing between "
                                 "the levels and staying masked at each; first_hitting (Zheng et al.): one pixel at a "
                                 "time in a random order, drawn among the levels only — the same law, 64 net calls a "
                                 "sample, and no choice against staying masked for a float type to get wrong.")
    temperature = param.Number(1.0, bounds=(0.05, 10.0), softbounds=(0.25, 2.0),
                               doc="Sampling temperature: the model's logits are divided by it.")
    sample_steps = param.Integer(256, bounds=(1, 100_000), softbounds=(1, 4096),
                                 doc="Steps of the ancestral sampler from t = 1 to 0 (more steps: each step's token "
                                     "choices less likely next to staying masked).")
    mask_schedule = param.Selector(default="linear", objects=["linear", "cosine"],
                                   doc="The share α(t) of tokens left unmasked at time t: linear 1 − t, cosine "
                                       "cos(πt/2) (in training and in sampling).")
    n_train = param.Integer(1000, bounds=(10, 100_000), doc="Training images (8×8 digits; held-out images are "
                                                            "other digits).")
    n_samples = param.Integer(500, bounds=(16, 10_000), doc="Samples drawn at each measurement (and held-out images "
                                                            "they are compared with).")
    width = param.Integer(256, bounds=(8, 4096), doc="Hidden units per layer.")
    depth = param.Integer(2, bounds=(1, 6), doc="Hidden layers.")
    lr = param.Number(1e-3, bounds=(1e-6, 1.0), doc="Adam learning rate.")
    batch_size = param.Integer(128, bounds=(1, 4096), doc="Images per step.")
    steps = param.Integer(3000, bounds=(1, 1_000_000), doc="Training steps.")
    eval_every = param.Integer(1000, bounds=(1, 1_000_000), doc="Steps between measurements (each draws n_samples "
                                                                "samples).")

    def model_bytes(self) -> int:
        d, out = SIDE * SIDE * (self.levels + 1), SIDE * SIDE * self.levels  # the net's input and output sizes
        params = d * self.width + (self.depth - 1) * self.width ** 2 + self.width * out
        return 4 * (4 * params + self.n_samples * (d + out + 2 * self.width))

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, streams, configs = group.device, group.c0, group.streams, group.configs
        length, v = SIDE * SIDE, c0.levels
        tokens, held, base = [], [], []
        for c, st in zip(configs, streams):
            train, other = datasets.images("digits_images", c.n_train, st.generator("data"), SIDE,
                                           n_held=2 * c.n_samples)
            tokens.append(quantize(train, v).to(dev))
            held.append(quantize(other[:c.n_samples], v))
            base.append(quantize(other[c.n_samples:], v))
        # the judge: each pixel's level frequencies in the training images (add-one smoothed), per model
        judge = [torch.log((F.one_hot(x.cpu(), v).double().sum(0) + 1) / (len(x) + v)) for x in tokens]  # (L, V)
        tail = [F.one_hot(x.cpu(), v).double().mean(0) < TAIL for x in tokens]  # (L, V): each pixel's rare levels
        # one net (and optimiser) per training, shared by the models that only sample from it differently
        inits = group.generators("init")
        nets = group.shared([init_(MaskedTokenNet(length, v, c0.width, c0.depth), inits[m]).to(dev)
                             for m in group.leaders])
        # the held-out negative ELBO's masks: the same draws at every measurement (stratified t per image)
        elbo = []
        for m, h in enumerate(held):
            g = streams[m].fresh("probe", 1)
            u = torch.rand(ELBO_DRAWS, generator=g, dtype=torch.float64)
            t = ((torch.arange(ELBO_DRAWS) + u) / ELBO_DRAWS).clamp_min(T_MIN)  # one t per draw, for every image
            t = t.repeat_interleave(len(h))
            masked = torch.rand(len(t), length, generator=g) < (1 - alpha(c0.mask_schedule, t))[:, None]
            elbo.append((h.repeat(ELBO_DRAWS, 1).to(dev), t.to(dev), masked.to(dev)))
        s = SimpleNamespace(
            k=group.k, configs=configs, dev=dev, length=length, levels=v, schedule=c0.mask_schedule, nets=nets,
            opts=group.shared([torch.optim.Adam(nets[m].parameters(), lr=configs[m].lr) for m in group.leaders]),
            streams=streams, leaders=group.leaders, training=group.training,
            gens=group.generators("order"), tokens=tokens, held=held, judge=judge, tail=tail, elbo=elbo,
            running=[[] for _ in group.leaders], ok=np.ones(group.k, dtype=bool),
            data_entropy=np.array([entropy_per_pixel(h, v) for h in held]),
            data_tail=np.array([cls._tail_share(h, tl) for h, tl in zip(held, tail)]),
            data_judge=np.array([cls._judge_nll(h, j) for h, j in zip(held, judge)]),
            sw_base=np.array([dif.sliced_wasserstein(grey(h, v), grey(b, v), generator=streams[m].fresh("probe"))
                              for m, (h, b) in enumerate(zip(held, base))]))
        return Plan(total=c0.steps, every=c0.eval_every, state=s)

    @staticmethod
    def _tail_share(tokens, tail) -> float:
        """The share of pixels whose level is in that pixel's tail."""
        return float(tail[torch.arange(tokens.shape[1]), tokens].double().mean())

    @staticmethod
    def _judge_nll(tokens, judge) -> float:
        """The judge's negative log-likelihood per pixel: each pixel's level under the training images' frequencies."""
        return float(-judge[torch.arange(tokens.shape[1]), tokens].mean())

    @classmethod
    def step(cls, plan, batch, step):
        s = plan.state
        for j, m in enumerate(s.leaders):  # each training once
            net, opt, g, x = s.nets[m], s.opts[m], s.gens[m], s.tokens[m]
            bs = s.configs[m].batch_size
            x0 = x[torch.randint(0, len(x), (bs,), generator=g).to(s.dev)]
            u = torch.rand(1, generator=g, dtype=torch.float64)
            t = ((torch.arange(bs) + u) / bs).clamp_min(T_MIN)  # stratified over (0, 1): a lower-variance estimate
            masked = torch.rand(bs, s.length, generator=g) < (1 - alpha(s.schedule, t))[:, None]
            loss = nelbo(net, x0, t.to(s.dev), masked.to(s.dev), s.levels, s.schedule).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            s.running[j].append(float(loss.detach()))
        return torch.tensor([s.running[j][-1] for j in s.training])

    @classmethod
    def measure(cls, plan, i, step):
        s, k = plan.state, plan.state.k
        out = {name: np.full(k, np.nan) for name in ("test_nelbo", "sample_entropy", "tail_share", "judge_nll", "sw")}
        samples = []
        with torch.no_grad():  # a measure of the trained net: once per training
            out["test_nelbo"] = np.array([float(nelbo(s.nets[m], *s.elbo[m], s.levels, s.schedule).mean())
                                          for m in s.leaders])[s.training]
        for m, (net, c) in enumerate(zip(s.nets, s.configs)):
            g = s.streams[m].fresh("sampling")
            if c.sampler == "first_hitting":
                x = sample_first_hitting(net, c.n_samples, s.length, s.levels, c.uniforms, c.temperature, g, s.dev)
            else:
                x = sample(net, c.n_samples, s.length, s.levels, c.sample_steps, s.schedule, c.uniforms,
                           c.temperature, g, s.dev)
            x = x.cpu()
            samples.append(x)
            out["sample_entropy"][m] = entropy_per_pixel(x, s.levels)
            out["tail_share"][m] = cls._tail_share(x, s.tail[m])
            out["judge_nll"][m] = cls._judge_nll(x, s.judge[m])
            out["sw"][m] = dif.sliced_wasserstein(grey(x, s.levels), grey(s.held[m], s.levels),
                                                  generator=s.streams[m].fresh("probe"))
        loss = np.array([np.mean(r) if r else np.nan for r in s.running])[s.training]
        for r in s.running:
            r.clear()
        s.ok = np.isfinite(out["test_nelbo"])
        plan.ctx.put("samples", ("model", "sample", "pixel"), np.stack([grey(x, s.levels).numpy() for x in samples]))
        plan.ctx.put("level_hist", ("model", "level"),
                     np.stack([np.bincount(x.flatten().numpy(), minlength=s.levels) / x.numel() for x in samples]),
                     level=np.arange(s.levels))
        plan.ctx.put("level_hist_data", ("model", "level"),
                     np.stack([np.bincount(h.flatten().numpy(), minlength=s.levels) / h.numel() for h in s.held]))
        return {"train_loss": loss, **out, "data_entropy": s.data_entropy, "data_tail_share": s.data_tail,
                "data_judge_nll": s.data_judge, "sw_baseline": s.sw_base}

    @classmethod
    def judge(cls, plan, rec, step):
        plan.diverged.update(step, ~plan.state.ok, "held-out negative ELBO")
