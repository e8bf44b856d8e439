"""Edge of stability: full-batch gradient descent drives the loss's sharpness up to 2/η and holds it there.

Cohen, Kaur, Li, Kolter & Talwalkar 2021 ("Gradient descent on neural networks typically occurs at the edge of
stability"): with step size η, the top eigenvalue of the training loss's Hessian (the sharpness) rises during
training (progressive sharpening) until it reaches 2/η — where gradient descent on a quadratic would diverge — and
then hovers just above it while the loss keeps falling, non-monotonically. The sharpness is measured by Lanczos on
Hessian-vector products (`workbench.probes.hessian`), warm-started from the last top eigenvector.
"""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import param
import torch
import torch.nn.functional as F

from .. import datasets, models
from ..engine import ensemble
from ..engine.loop import Plan
from ..engine.measure import DIVERGENCE_METRICS, SPECTRA_METRICS, Metric, layer_spectra
from ..probes import hessian, spectra
from .base import Study


class EdgeOfStability(Study):
    key = "edge_of_stability"
    title = "Edge of stability: sharpness meets 2/η"
    question = "Under full-batch gradient descent, does the loss's sharpness rise until it reaches 2/η and stay there?"
    paper = "Cohen et al. 2021 (Gradient descent on neural networks typically occurs at the edge of stability)"
    finding = "The sharpness rises until it reaches 2/η, then hovers there while the loss keeps falling, non-monotonically."
    claims = ('edge_of_stability',)
    axis = "step"
    notebook = "spectra"
    metrics = (
        Metric("sharpness", "sharpness (top Hessian eigenvalue)", "max",
               group="Sharpness (top Hessian eigenvalue) and 2/η"),
        Metric("two_over_lr", "2/η", group="Sharpness (top Hessian eigenvalue) and 2/η"),
        Metric("sharpness_residual", "Lanczos residual ‖Hv − λv‖ of the sharpness"),
        Metric("train_loss", "train loss (MSE)", "min", group="Train loss (MSE)"),
        Metric("train_acc", "train accuracy", "max", group="Accuracy"),
        Metric("test_acc", "test accuracy", "max", group="Accuracy"),
        *(replace(m, per="run", group="") for m in SPECTRA_METRICS),
        Metric("weight_beyond_mp", "share of weight eigenvalues beyond the Marchenko–Pastur edge", per="run"),
        Metric("weight_q", "layer aspect ratio q", per="run"),
        *DIVERGENCE_METRICS,
    )
    headline = "sharpness"
    tiny = {"steps": 20, "sharpness_every": 10, "n_train": 100, "width": 16}
    batchable = frozenset({"seed", "lr"})
    primary = ("lr", "width", "depth", "activation", "n_train", "steps", "sharpness_every", "seed")
    presets = {
        "sharpness_vs_lr": {
            "about": "The final sharpness against the step size: at the edge of stability it tracks 2/η.",
            "grid": {"lr": [0.02, 0.05, 0.1, 0.2, 0.4], "width": [100]},
            "seeds": [0, 1],
            "dials": {"steps": 3000, "sharpness_every": 100},
            "x": "lr", "y": "width", "metric": "sharpness", "epoch": "final",
        },
    }

    lr = param.Number(0.2, bounds=(1e-5, 10.0), softbounds=(0.001, 1.0), doc="Gradient descent step size η.")
    width = param.Integer(100, bounds=(1, 4096), doc="Hidden units per layer.")
    depth = param.Integer(2, bounds=(1, 8), doc="Hidden layers.")
    activation = param.Selector(default="tanh", objects=["tanh", "relu"], doc="Hidden activation.")
    n_train = param.Integer(1000, bounds=(10, 1500), doc="Training examples (digits; full batch).")
    steps = param.Integer(3000, bounds=(1, 1_000_000), doc="Gradient descent steps.")
    sharpness_every = param.Integer(100, bounds=(1, 100_000), doc="Steps between sharpness measurements.")
    lanczos_iters = param.Integer(6, bounds=(2, 500), doc="Lanczos steps per measurement (warm-started from the last "
                                                           "top eigenvector).")

    def model_bytes(self) -> int:
        params = 64 * self.width + (self.depth - 1) * self.width**2 + self.width * 16
        return 4 * (8 * params + 1797 * (64 + self.width * (self.depth + 1) + 20))

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, k, configs = group.device, group.c0, group.k, group.configs
        data = [datasets.digits(c.n_train, seed) for c, seed in zip(configs, group.seeds("data"))]
        stackd = lambda xs: torch.stack(xs).to(dev)  # noqa: E731
        mods = [models.build("mlp", input_dim=64, width=c0.width, depth=c0.depth, num_classes=10,
                             generator=g, activation=c0.activation)
                for g in group.generators("init")]
        net = ensemble.stack(mods, dev)
        lr = group.per_model("lr")
        y_tr = stackd([d.y_train for d in data])
        s = SimpleNamespace(
            k=k, iters=c0.lanczos_iters, every=c0.sharpness_every, lr=lr,
            opt=ensemble.Optimizer(net.tensors(), "sgd", lr=lr),
            x_tr=stackd([d.x_train for d in data]), y_tr=y_tr, targets=F.one_hot(y_tr, 10).float(),  # (K, n, 10)
            x_te=stackd([d.x_test for d in data]), y_te=stackd([d.y_test for d in data]),
            vectors=[None] * k,  # each model's last top eigenvector: the next Lanczos run starts from it
            probes=group.generators("probe"))  # each model's Lanczos start vectors, from its own stream
        return Plan(total=c0.steps, every=c0.sharpness_every, net=net, state=s)

    @staticmethod
    def _loss_of(plan, m):
        """Model m's loss as a function of its own parameters (for the Hessian)."""
        s = plan.state
        return lambda p: _mse(plan.net.forward_one(p, s.x_tr[m]), s.targets[m])

    @classmethod
    def step(cls, plan, batch, step):
        s = plan.state
        per_model, grads = plan.net.gradients(s.x_tr, lambda z: _mse(z, s.targets))  # full batch
        ensemble.apply(plan.net, s.opt, grads)
        return per_model

    @classmethod
    def measure(cls, plan, i, step):
        s, net = plan.state, plan.net
        sharp, residual = np.full(s.k, np.nan), np.full(s.k, np.nan)
        for m in range(s.k):  # the top Hessian eigenvalue, and its residual ‖Hv − λv‖ (an eigenvalue lies that close)
            params = net.model(m)
            if not all(torch.isfinite(p).all() for p in params.values()):
                continue
            vals, vecs = hessian.top_eigenvalues(cls._loss_of(plan, m), params, k=1, iters=s.iters,
                                                 generator=s.probes[m], v0=s.vectors[m], return_vectors=True)
            sharp[m], s.vectors[m] = float(vals[0]), vecs[0]
            residual[m] = hessian.residual(cls._loss_of(plan, m), params, sharp[m], vecs[0])
        with torch.no_grad():
            z_tr, z_te = net(s.x_tr), net(s.x_te)
        return {"train_loss": _mse(z_tr, s.targets).cpu().numpy(),
                "train_acc": (z_tr.argmax(-1) == s.y_tr).float().mean(1).cpu().numpy(),
                "test_acc": (z_te.argmax(-1) == s.y_te).float().mean(1).cpu().numpy(),
                "sharpness": sharp, "sharpness_residual": residual, "two_over_lr": (2 / s.lr).cpu().numpy()}

    @classmethod
    def judge(cls, plan, rec, step):
        plan.diverged.update(step, ~np.isfinite(rec["train_loss"]), "loss")  # the last update's too

    @classmethod
    def finish(cls, plan):
        s = plan.state
        cls._final_spectra(plan.ctx, plan.net, lambda m: cls._loss_of(plan, m), s.x_te, s.y_te, s.probes, s.k)

    @classmethod
    def _final_spectra(cls, ctx, net, loss_of, x_te, y_te, probes, k):
        """At the end: the Hessian's top eigenvalues and density (SLQ), the middle layer's weight spectrum with its
        Marchenko–Pastur edge, power-law tail and stable rank, the last hidden layer's covariance spectrum."""
        top, grids, dens = np.full((k, 5), np.nan), np.full((k, 400), np.nan), np.full((k, 400), np.nan)
        finite = [all(bool(torch.isfinite(p[m]).all()) for p in net.params.values()) for m in range(k)]
        for m in range(k):
            if not finite[m]:
                continue  # a diverged model has no spectra (nan), whatever its company
            params = net.model(m)
            top[m] = hessian.top_eigenvalues(loss_of(m), params, k=5, generator=probes[m]).cpu().numpy()
            g, d = hessian.density(loss_of(m), params, iters=30, probes=2, generator=probes[m])
            grids[m], dens[m] = g.numpy(), d.numpy()
        j = net.n_layers // 2 if net.n_layers > 2 else 0
        w_ev, h_ev, summary = layer_spectra(net, x_te, layer=j, labels=y_te)
        summary["weight_beyond_mp"] = np.array([spectra.mp_fit(net.params[f"w{j}"][m].detach())["beyond_edge"]
                                                if finite[m] else np.nan for m in range(k)])
        ctx.put("hessian_top", ("model", "eigen_index"), top, eigen_index=np.arange(5))
        ctx.put("hessian_density_grid", ("model", "density_point"), grids)
        ctx.put("hessian_density", ("model", "density_point"), dens)
        ctx.put("weight_eigenvalues", ("model", "weight_eigen"), np.stack(w_ev))
        ctx.put("feature_eigenvalues", ("model", "feature_eigen"), np.stack(h_ev))
        for name, values in summary.items():
            ctx.put(name, ("model",), values)


def _mse(z, y1h):  # ½ Σ_c (z − y)², averaged over examples
    return 0.5 * (z - y1h).pow(2).sum(-1).mean(-1)
