"""SGD noise in the lazy and feature-learning regimes.

Sclocchi, Geiger & Wyart 2023 ("Dissecting the effects of SGD noise in distinct regimes of deep learning"), after
Geiger et al. 2020 ("Disentangling feature and lazy training"): the output F(x) = α·(f_w(x) − f_w0(x)) is centred
at initialisation; the hinge loss is L = (1/α²P) Σ max(0, 1 − y F(x)). Large α is the lazy (kernel) regime, small α
the feature-learning one. The noise dial is the SGD temperature T = learning rate / batch size.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import param
import torch

from .. import models
from ..engine import ensemble
from ..engine.group import Streams
from ..engine.loop import Plan
from ..engine.measure import DIVERGENCE_METRICS, PRECISION_METRICS, SPECTRA_METRICS, Metric
from ..engine.precision import Precision
from ..errors import ConfigError
from .base import Study, precision_dial

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
    finding = "At small α (feature learning) a higher SGD temperature changes the test error; at large α (lazy) it barely does."
    claims = ('sgd_temperature', 'tc_power_law')
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
    applies = {"chi": ("task", ("perceptron",)), "dim": ("task", ("perceptron",)), "n_test": ("task", ("perceptron",))}
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

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, k, configs = group.device, group.c0, group.k, group.configs
        data = [c._data() for c in configs]
        x_tr, y_tr, x_te, y_te = (torch.stack([d[i] for d in data]).to(dev) for i in range(4))  # (K, n, d), (K, n)
        n, dim = x_tr.shape[1], x_tr.shape[2]
        mods = [models.build("mlp", input_dim=dim, width=c0.width, depth=c0.depth, num_classes=1, generator=g)
                for g in group.generators("init")]
        prec = (lambda: Precision(c0.precision, num_models=k, device=dev)) if c0.precision != "fp32" else (lambda: None)
        # init: the frozen f_w0, read at the same precision so that F = 0 at the start
        net, init = ensemble.stack(mods, dev, prec()), ensemble.stack(mods, dev, prec())
        w0 = [p.detach().clone() for p in net.tensors()]
        alpha = group.per_model("alpha")
        with torch.no_grad():
            f0_tr, f0_te = init(x_tr)[..., 0], init(x_te)[..., 0]  # (K, n)
        s = SimpleNamespace(
            k=k, n=n, batch_size=c0.batch_size, order=group.generators("order"), noise=group.generators("noise"),
            sigma=group.values("input_noise"), x_tr=x_tr, y_tr=y_tr, x_te=x_te, y_te=y_te, init=init,
            f0_tr=f0_tr, f0_te=f0_te, w0=w0, w0_norm=torch.sqrt(sum(p.pow(2).sum(tuple(range(1, p.ndim))) for p in w0)),
            alpha=alpha, a=alpha[:, None], perms=None, pos=n, probe=slice(0, min(n, 256)),
            opt=ensemble.Optimizer(net.tensors(), "sgd", lr=group.per_model("temperature") * c0.batch_size),
            fit_step=np.full(k, -1, dtype=np.int64),  # the first measured step at which all training points fit
            bad=np.zeros(k, dtype=bool))  # models whose outputs went non-finite
        ctx.put("fit_step", ("model",), s.fit_step.copy())
        return Plan(total=c0.steps, every=c0.eval_every, net=net, spectra_every=c0.spectra_every, spectra_x=x_te,
                    spectra_y=y_te, state=s)

    @classmethod
    def batches(cls, plan, step):
        s = plan.state
        if s.pos + s.batch_size > s.n:  # a new epoch: a fresh order per model
            s.perms = torch.stack([torch.randperm(s.n, generator=g) for g in s.order]).to(s.x_tr.device)
            s.pos = 0
        s.pos += s.batch_size
        return (s.perms[:, s.pos - s.batch_size:s.pos],)  # (K, B)

    @classmethod
    def step(cls, plan, idx, step):
        s, net = plan.state, plan.net
        x_b, y_b = ensemble.gather(s.x_tr, idx), ensemble.gather(s.y_tr, idx)
        if any(s.sigma):
            drawn = torch.stack([torch.randn(x_b.shape[1:], generator=g) * sd for g, sd in zip(s.noise, s.sigma)])
            x_b = x_b + drawn.to(x_b.device)
            with torch.no_grad():
                z0 = s.init(x_b)[..., 0]
        else:
            z0 = ensemble.gather(s.f0_tr, idx)
        per_model, grads = net.gradients(x_b, lambda z: _hinge(s.a * (z[..., 0] - z0), y_b).mean(1) / s.alpha**2)
        ensemble.apply(net, s.opt, grads)  # fp16: the dynamic loss scale
        return per_model

    @classmethod
    def measure(cls, plan, i, step):
        s, net = plan.state, plan.net
        with torch.no_grad():
            F_tr = s.a * (net(s.x_tr)[..., 0] - s.f0_tr)
            F_te = s.a * (net(s.x_te)[..., 0] - s.f0_te)
            change = torch.sqrt(sum((p - q).pow(2).sum(tuple(range(1, p.ndim)))
                                    for p, q in zip(net.tensors(), s.w0))) / s.w0_norm
        margin = s.y_tr * F_tr
        ok = torch.isfinite(F_tr).all(1) & torch.isfinite(F_te).all(1)  # a diverged model measures nan
        nan = torch.tensor(float("nan"), device=F_tr.device)
        x_p, y_p, f0_p = s.x_tr[:, s.probe], s.y_tr[:, s.probe], s.f0_tr[:, s.probe]
        gns = net.gradient_noise_scale(x_p, lambda z: _hinge(s.a * (z[..., 0] - f0_p), y_p).sum(1) / s.alpha**2)
        rec = {"train_loss": _hinge(F_tr, s.y_tr).mean(1), "fit": (margin >= 1).float().mean(1),
               "train_err": (margin <= 0).float().mean(1), "test_err": (s.y_te * F_te <= 0).float().mean(1),
               "weight_change": change, "grad_noise_scale": gns}
        rec = {key: torch.where(ok, v, nan).cpu().numpy() for key, v in rec.items()}
        s.fit_step[(rec["fit"] >= 1.0) & (s.fit_step < 0)] = step
        plan.ctx.put("fit_step", ("model",), s.fit_step.copy())
        s.bad = ~ok.cpu().numpy()
        return rec

    @classmethod
    def judge(cls, plan, rec, step):
        plan.diverged.update(step, plan.state.bad, "output")

    @classmethod
    def converged(cls, plan):
        """Every model fits its training set (or diverged): hinge gradients are zero from here on."""
        return bool(((plan.state.fit_step >= 0) | plan.state.bad).all())


def _hinge(F, y):  # per example
    return torch.relu(1 - y * F)
