"""SGD noise in the lazy and feature-learning regimes.

Sclocchi, Geiger & Wyart 2023 ("Dissecting the effects of SGD noise in distinct regimes of deep learning"), after
Geiger et al. 2020 ("Disentangling feature and lazy training"): the output F(x) = α·(f_w(x) − f_w0(x)) is centred
at initialisation; the hinge loss is L = (1/α²P) Σ max(0, 1 − y F(x)). Large α is the lazy (kernel) regime, small α
the feature-learning one. The noise dial is the SGD temperature T = learning rate / batch size.
"""
from __future__ import annotations

import numpy as np
import param
import torch

from .. import models
from ..engine import ensemble
from ..engine.context import DivergenceLog
from ..engine.group import Group, Streams
from ..engine.precision import Precision
from ..errors import ConfigError
from .base import (DIVERGENCE_METRICS, PRECISION_METRICS, SPECTRA_METRICS, Metric, SpectraLog, Study, precision_dial,
                   precision_metrics)

TASKS = ("parity", "perceptron")


def perceptron_data(n: int, dim: int, chi: float, generator: torch.Generator):
    """Teacher perceptron y = sign(x₁); x ~ N(0, I) except x₁, whose density ∝ |x₁|^χ e^{-x₁²/2}: χ > 0 thins the
    data near the decision boundary (Tomasini et al. 2022). |x₁| = √(2u) with u ~ Gamma((χ+1)/2, 1)."""
    x = torch.randn(n, dim, generator=generator)
    conc = torch.full((n,), (chi + 1) / 2)
    # Gamma draws through the generator: torch's sampler takes no generator, so use a seeded numpy stream
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    u = torch.as_tensor(rng.gamma(conc.numpy(), 1.0), dtype=torch.float32)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    x[:, 0] = sign * torch.sqrt(2 * u)
    return x, torch.sign(x[:, 0])


def parity_data(n_train: int, seed: int):
    """Digits, label +1 for even digits and -1 for odd; pixels scaled to [0, 1] and centred."""
    from .. import datasets

    d = datasets.digits(n_train, seed)
    mean = d.x_train.mean(0)
    to_pm = lambda y: torch.where(y % 2 == 0, 1.0, -1.0)  # noqa: E731
    return d.x_train - mean, to_pm(d.y_train), d.x_test - mean, to_pm(d.y_test)


class SGDNoise(Study):
    key = "sgd_noise"
    title = "SGD noise: lazy versus feature learning"
    question = "How does SGD's noise (temperature T = lr / batch) change what a net learns, in the lazy regime " \
               "(large α) and the feature-learning one (small α)?"
    paper = "Sclocchi, Geiger & Wyart 2023; Geiger et al. 2020; McCandlish et al. 2018 (gradient noise scale)"
    axis = "step"
    metrics = (
        Metric("test_err", "test error", "min", group="Error"),
        Metric("train_err", "train error", "min", group="Error"),
        Metric("fit", "fraction fitted (margin ≥ 1)", "max", group="Fit (margin ≥ 1)"),
        Metric("weight_change", "|w − w0| / |w0|", group="Weight change |w−w0|/|w0|"),
        Metric("grad_noise_scale", "gradient noise scale B_simple", group="Gradient noise scale"),
        Metric("train_loss", "train hinge loss", "min"),
        *PRECISION_METRICS, *SPECTRA_METRICS,
        Metric("fit_step", "step every training point fits (-1: never)", per="run"),
        *DIVERGENCE_METRICS,
    )
    headline = "test_err"
    tiny = {"n_train": 32, "n_test": 64, "width": 16, "steps": 40, "eval_every": 20, "input_noise": 0.1,
            "precision": "fp16"}
    batchable = frozenset({"seed", "alpha", "temperature", "input_noise", "chi"})
    primary = ("alpha", "temperature", "batch_size", "n_train", "task", "width", "depth", "steps", "seed")
    presets = {
        "phase_diagram": {
            "about": "Test error over the regime dial α and the SGD temperature T (Sclocchi et al. 2023): in the "
                     "lazy regime (large α) the error hardly depends on T until T is large; with feature learning "
                     "(small α) the temperature matters.",
            "grid": {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0], "temperature": [1e-4, 1e-3, 1e-2, 1e-1]},
            "seeds": [0, 1],
            "dials": {"task": "perceptron", "n_train": 256, "steps": 4000},
            "x": "temperature", "y": "alpha", "metric": "test_err", "epoch": "final",
        },
        "crossover_vs_P": {
            "about": "Lazy regime (α = 100): the weight change |w − w0|/|w0| against T for several training-set sizes "
                     "P; the crossover temperature T_c, where it departs from its small-T plateau, against P with "
                     "its fitted exponent.",
            "grid": {"temperature": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "n_train": [64, 128, 256, 512]},
            "seeds": [0, 1],
            "dials": {"task": "perceptron", "alpha": 100.0, "steps": 4000},
            "x": "temperature", "y": "n_train", "metric": "weight_change", "epoch": "final",
        },
    }

    task = param.Selector(default="perceptron", objects=list(TASKS),
                          doc="perceptron: teacher y = sign(x₁) in `dim` dimensions; parity: digits, even vs odd.")
    alpha = param.Number(1.0, bounds=(1e-4, 1e4), softbounds=(1e-3, 1e3),
                         doc="Output scale α of F = α(f_w − f_w0): large = lazy regime, small = feature learning.")
    temperature = param.Number(1e-2, bounds=(1e-8, 10.0), softbounds=(1e-5, 1.0),
                               doc="SGD temperature T = learning rate / batch size (the learning rate is T·B).")
    batch_size = param.Integer(16, bounds=(1, 100_000), doc="Examples per step (B).")
    n_train = param.Integer(256, bounds=(8, 100_000), doc="Training-set size P.")
    n_test = param.Integer(2000, bounds=(10, 100_000), doc="Test examples (perceptron task).")
    dim = param.Integer(16, bounds=(2, 4096), doc="Input dimension of the perceptron task.")
    chi = param.Number(0.0, bounds=(0.0, 10.0), doc="Perceptron: data density ∝ |x₁|^χ near the boundary x₁ = 0.")
    input_noise = param.Number(0.0, bounds=(0.0, 10.0), doc="Std of Gaussian noise added to each training input, "
                                                             "drawn anew every step.")
    width = param.Integer(128, bounds=(1, 8192), doc="Hidden units per layer.")
    depth = param.Integer(2, bounds=(1, 16), doc="Hidden layers.")
    steps = param.Integer(4000, bounds=(1, 10_000_000), doc="SGD steps at most (training stops once every model "
                                                             "fits its training set).")
    eval_every = param.Integer(100, bounds=(1, 1_000_000), doc="Steps between measurements.")
    precision = precision_dial()
    spectra_every = param.Integer(0, bounds=(0, 10_000_000), doc="Steps between spectra snapshots (a hidden layer's "
                                  "weight spectrum, the last hidden features' covariance spectrum); 0: none.")

    def check(self):
        if self.task == "parity" and not 1 <= self.n_train < 1797:
            raise ConfigError("n_train", self.n_train, "between 1 and 1796 for the parity task (digits)")
        Precision(self.precision).check_dims({"the input dimension": 64 if self.task == "parity" else self.dim,
                                              "width": self.width})

    def _data(self):
        streams = Streams(self)
        if self.task == "parity":
            return parity_data(self.n_train, streams.seed("data"))
        g = streams.fresh("data")
        x_tr, y_tr = perceptron_data(self.n_train, self.dim, self.chi, g)
        x_te, y_te = perceptron_data(self.n_test, self.dim, self.chi, g)
        return x_tr, y_tr, x_te, y_te

    def model_bytes(self) -> int:
        d = 64 if self.task == "parity" else self.dim
        n = self.n_train + (597 if self.task == "parity" else self.n_test)
        params = d * self.width + (self.depth - 1) * self.width**2 + self.width
        return 4 * (8 * params + n * (d + self.width * (self.depth + 1)))

    @classmethod
    def execute_group(cls, ctx, configs):
        group = Group(configs, ctx.device)
        dev, c0, k = group.device, group.c0, group.k
        data = [c._data() for c in configs]
        x_tr, y_tr, x_te, y_te = (torch.stack([d[i] for d in data]).to(dev) for i in range(4))  # (K, n, d), (K, n)
        n, dim = x_tr.shape[1], x_tr.shape[2]
        order, noise = group.generators("order"), group.generators("noise")
        mods = [models.build("mlp", input_dim=dim, width=c0.width, depth=c0.depth, num_classes=1, generator=g)
                for g in group.generators("init")]
        prec = (lambda: Precision(c0.precision, num_models=k, device=dev)) if c0.precision != "fp32" else (lambda: None)
        # init: the frozen f_w0, read at the same precision so that F = 0 at the start
        net, init = ensemble.stack(mods, dev, prec()), ensemble.stack(mods, dev, prec())
        w0 = [p.detach().clone() for p in net.tensors()]
        w0_norm = torch.sqrt(sum(p.pow(2).sum(tuple(range(1, p.ndim))) for p in w0))  # (K,)
        alpha = ensemble.per_model([c.alpha for c in configs], k, dev)
        lr = ensemble.per_model([c.temperature * c0.batch_size for c in configs], k, dev)
        sigma = [c.input_noise for c in configs]
        opt = ensemble.Optimizer(net.tensors(), "sgd", lr=lr)
        with torch.no_grad():
            f0_tr, f0_te = init(x_tr)[..., 0], init(x_te)[..., 0]  # (K, n)
        probe = slice(0, min(n, 256))
        fit_step = np.full(k, -1, dtype=np.int64)  # the first measured step at which all training points fit
        diverged = DivergenceLog(ctx, k)
        spectra_log = SpectraLog(ctx, c0.spectra_every)
        ctx.put("fit_step", ("model",), fit_step)
        a = alpha[:, None]

        def hinge(F, y):  # per example
            return torch.relu(1 - y * F)

        def evaluate(step: int):
            with torch.no_grad():
                F_tr = a * (net(x_tr)[..., 0] - f0_tr)
                F_te = a * (net(x_te)[..., 0] - f0_te)
                change = torch.sqrt(sum((p - q).pow(2).sum(tuple(range(1, p.ndim)))
                                        for p, q in zip(net.tensors(), w0))) / w0_norm
            margin = y_tr * F_tr
            fit = (margin >= 1).float().mean(1)
            ok = torch.isfinite(F_tr).all(1) & torch.isfinite(F_te).all(1)  # a diverged model measures nan
            nan = torch.tensor(float("nan"), device=dev)
            x_p, y_p, f0_p = x_tr[:, probe], y_tr[:, probe], f0_tr[:, probe]
            gns = net.gradient_noise_scale(x_p, lambda z: hinge(a * (z[..., 0] - f0_p), y_p).sum(1) / alpha**2)
            rec = {"train_loss": hinge(F_tr, y_tr).mean(1), "fit": fit, "train_err": (margin <= 0).float().mean(1),
                   "test_err": (y_te * F_te <= 0).float().mean(1), "weight_change": change, "grad_noise_scale": gns}
            rec = {key: torch.where(ok, v, nan).cpu().numpy() for key, v in rec.items()}
            rec = {"step": step, **rec, **precision_metrics(net.precision, k), **spectra_log.record(net, x_te, step)}
            fit_step[(rec["fit"] >= 1.0) & (fit_step < 0)] = step
            ctx.put("fit_step", ("model",), fit_step.copy())
            bad = ~ok.cpu().numpy()
            ctx.emit(rec)
            diverged.update(step, bad, "output")
            return bool(((fit_step >= 0) | bad).all())

        evaluate(0)
        perms, pos, step = None, n, 0
        while step < c0.steps:
            if pos + c0.batch_size > n:  # a new epoch: a fresh order per model
                perms = torch.stack([torch.randperm(n, generator=g) for g in order]).to(dev)
                pos = 0
            idx = perms[:, pos:pos + c0.batch_size]  # (K, B)
            pos += c0.batch_size
            ctx.check()
            x_b, y_b = ensemble.gather(x_tr, idx), ensemble.gather(y_tr, idx)
            if any(sigma):
                drawn = torch.stack([torch.randn(x_b.shape[1:], generator=g) * s for g, s in zip(noise, sigma)])
                x_b = x_b + drawn.to(dev)
                with torch.no_grad():
                    z0 = init(x_b)[..., 0]
            else:
                z0 = ensemble.gather(f0_tr, idx)
            if net.precision is not None:
                net.precision.measure = (step + 1) % c0.eval_every == 0
            per_model, grads = net.gradients(x_b, lambda z: hinge(a * (z[..., 0] - z0), y_b).mean(1) / alpha**2)
            ensemble.apply(net, opt, grads)  # fp16: the dynamic loss scale
            step += 1
            diverged.check_step(step, per_model, net)
            if step % c0.eval_every == 0 or step == c0.steps:
                if evaluate(step):
                    break  # every model fits its training set: hinge gradients are zero from here on
