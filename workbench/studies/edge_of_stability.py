"""Edge of stability: full-batch gradient descent drives the loss's sharpness up to 2/η and holds it there.

Cohen, Kaur, Li, Kolter & Talwalkar 2021 ("Gradient descent on neural networks typically occurs at the edge of
stability"): with step size η, the top eigenvalue of the training loss's Hessian (the sharpness) rises during
training (progressive sharpening) until it reaches 2/η — where gradient descent on a quadratic would diverge — and
then hovers just above it while the loss keeps falling, non-monotonically. The sharpness is measured by Lanczos on
Hessian-vector products (`workbench.probes.hessian`), warm-started from the last top eigenvector.
"""
from __future__ import annotations

import numpy as np
import param
import torch
import torch.nn.functional as F

from .. import datasets, models
from ..engine import ensemble
from ..engine.context import DivergenceLog
from ..engine.group import Group
from ..probes import hessian, spectra
from dataclasses import replace

from .base import DIVERGENCE_METRICS, SPECTRA_METRICS, Metric, Study, layer_spectra


class EdgeOfStability(Study):
    key = "edge_of_stability"
    title = "Edge of stability: sharpness meets 2/η"
    question = "Under full-batch gradient descent, does the loss's sharpness rise until it reaches 2/η and stay there?"
    paper = "Cohen et al. 2021 (Gradient descent on neural networks typically occurs at the edge of stability)"
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

    @classmethod
    def execute_group(cls, ctx, configs):
        group = Group(configs, ctx.device)
        dev, c0, k = group.device, group.c0, group.k
        data = [datasets.digits(c.n_train, seed) for c, seed in zip(configs, group.seeds("data"))]
        stackd = lambda xs: torch.stack(xs).to(dev)  # noqa: E731
        x_tr, y_tr = stackd([d.x_train for d in data]), stackd([d.y_train for d in data])
        x_te, y_te = stackd([d.x_test for d in data]), stackd([d.y_test for d in data])
        targets = F.one_hot(y_tr, 10).float()  # (K, n, 10)
        mods = [models.build("mlp", input_dim=64, width=c0.width, depth=c0.depth, num_classes=10,
                             generator=g, activation=c0.activation)
                for g in group.generators("init")]
        net = ensemble.stack(mods, dev)
        lr = group.per_model("lr")
        opt = ensemble.Optimizer(net.tensors(), "sgd", lr=lr)

        def mse(z, y1h):  # ½ Σ_c (z − y)², averaged over examples
            return 0.5 * (z - y1h).pow(2).sum(-1).mean(-1)

        def loss_of(m):  # model m's loss as a function of its own parameters (for the Hessian)
            return lambda p: mse(net.forward_one(p, x_tr[m]), targets[m])

        diverged = DivergenceLog(ctx, k)
        vectors: list = [None] * k
        probes = group.generators("probe")  # each model's Lanczos start vectors, from its own stream
        last_sharp, last_residual = np.full(k, np.nan), np.full(k, np.nan)

        def sharpness():
            """Each model's top Hessian eigenvalue, and its residual ‖Hv − λv‖ (an eigenvalue lies that close)."""
            out, res = np.full(k, np.nan), np.full(k, np.nan)
            for m in range(k):
                params = net.model(m)
                if not all(torch.isfinite(p).all() for p in params.values()):
                    continue
                vals, vecs = hessian.top_eigenvalues(loss_of(m), params, k=1, iters=c0.lanczos_iters,
                                                     generator=probes[m], v0=vectors[m], return_vectors=True)
                out[m], vectors[m] = float(vals[0]), vecs[0]
                res[m] = hessian.residual(loss_of(m), params, out[m], vecs[0])
            return out, res

        def evaluate(step, loss):
            with torch.no_grad():
                z_tr, z_te = net(x_tr), net(x_te)
            rec = {"step": step, "train_loss": loss.cpu().numpy(),
                   "train_acc": (z_tr.argmax(-1) == y_tr).float().mean(1).cpu().numpy(),
                   "test_acc": (z_te.argmax(-1) == y_te).float().mean(1).cpu().numpy(),
                   "sharpness": last_sharp.copy(), "sharpness_residual": last_residual.copy(),
                   "two_over_lr": (2 / lr).cpu().numpy()}
            ctx.emit(rec)

        for step in range(c0.steps + 1):
            ctx.check()
            if step % c0.sharpness_every == 0 or step == c0.steps:
                last_sharp[:], last_residual[:] = sharpness()
            per_model, grads = net.gradients(x_tr, lambda z: mse(z, targets))
            if step % c0.sharpness_every == 0 or step == c0.steps:
                evaluate(step, per_model)
            diverged.update(step, ~torch.isfinite(per_model), "loss")
            if step == c0.steps:
                break
            opt.step(grads)
        cls._final_spectra(ctx, net, loss_of, x_te, probes, k)

    @classmethod
    def _final_spectra(cls, ctx, net, loss_of, x_te, probes, k):
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
        w_ev, h_ev, summary = layer_spectra(net, x_te, layer=j)
        summary["weight_beyond_mp"] = np.array([spectra.mp_fit(net.params[f"w{j}"][m].detach())["beyond_edge"]
                                                if finite[m] else np.nan for m in range(k)])
        ctx.put("hessian_top", ("model", "eigen_index"), top, eigen_index=np.arange(5))
        ctx.put("hessian_density_grid", ("model", "density_point"), grids)
        ctx.put("hessian_density", ("model", "density_point"), dens)
        ctx.put("weight_eigenvalues", ("model", "weight_eigen"), np.stack(w_ev))
        ctx.put("feature_eigenvalues", ("model", "feature_eigen"), np.stack(h_ev))
        for name, values in summary.items():
            ctx.put(name, ("model",), values)
