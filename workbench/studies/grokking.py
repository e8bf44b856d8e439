"""Grokking at the edge of numerical stability.

Prieto, Barsbey, Mediano & Birdal 2025 ("Grokking at the edge of numerical stability"): on modular addition, once
the training set is fit, softmax cross-entropy keeps growing the logits along the "naive loss minimization"
direction (the gradient aligns with the weights) until the softmax rounds the correct class to exactly 1 and the
loss of those examples to exactly 0 in floating point: Softmax Collapse (SC), no gradient, no grokking. Weight
decay, a wider float (float64), StableMax (s(x) = x + 1 for x ≥ 0, 1/(1 − x) below, in place of exp) or ⊥Grad
(the gradient with its component along the weights removed) let the net generalize.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import param
import torch

from .. import datasets
from ..engine import ensemble
from ..engine.group import Streams
from ..engine.loop import Plan
from ..engine.measure import DIVERGENCE_METRICS, Metric
from .base import Study

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def stablemax(z: torch.Tensor) -> torch.Tensor:
    """StableMax numerators s(z) = z + 1 (z ≥ 0), 1 / (1 − z) (z < 0): linear growth, not exponential."""
    return torch.where(z >= 0, z + 1, 1 / (1 - torch.clamp(z, max=0)))


def per_example_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """−log p_y in the logits' own dtype, p = softmax or StableMax; any leading shape."""
    if kind == "stablemax":
        s = stablemax(logits)
        return -torch.log(s.gather(-1, y[..., None]).squeeze(-1) / s.sum(-1))
    return -torch.log_softmax(logits, dim=-1).gather(-1, y[..., None]).squeeze(-1)


def perpendicular(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """⊥Grad, per model (dim 0): g − (⟨g, w⟩ / ⟨w, w⟩) w, rescaled to the norm of g (Prieto et al. 2025)."""
    dims = tuple(range(1, w.ndim))
    coef = (g * w).sum(dims, keepdim=True) / (w * w).sum(dims, keepdim=True).clamp_min(1e-30)
    gp = g - coef * w
    norm = lambda t: torch.linalg.vector_norm(t, dim=dims, keepdim=True)  # noqa: E731
    return gp * (norm(g) / norm(gp).clamp_min(1e-30))


def fourier_power(embedding: torch.Tensor) -> torch.Tensor:
    """Power of the token embeddings (K, p, h) at each frequency 0..p//2 along the token axis, summed over h."""
    return torch.fft.rfft(embedding, dim=1).abs().pow(2).sum(-1)  # (K, p//2 + 1)


class Grokking(Study):
    key = "grokking"
    title = "Grokking and softmax collapse"
    question = "Why does a net that fits modular addition sometimes never generalize? Watch the softmax round its " \
               "own loss to zero, and what weight decay, float64, StableMax or ⊥Grad do about it."
    paper = "Prieto et al. 2025 (Grokking at the edge of numerical stability); Power et al. 2022"
    finding = "Without weight decay the share of exactly-zero losses (softmax collapse) climbs and test accuracy stalls; weight decay, float64, StableMax or ⊥Grad let it grok."
    claims = ('softmax_collapse', 'perp_grad', 'stablemax')
    axis = "epoch"
    metrics = (
        Metric("train_acc", "train accuracy", "max", group="Accuracy"),
        Metric("test_acc", "test accuracy", "max", group="Accuracy"),
        Metric("train_loss", "train loss", "min", group="Loss"),
        Metric("test_loss", "test loss", "min", group="Loss"),
        Metric("sc_fraction", "softmax collapse (share of zero losses)", "min",
               group="Softmax collapse (share of zero losses)"),
        Metric("logit_norm", "logit norm", group="Logit norm"),
        Metric("grad_weight_cos", "cos(−grad, w)", group="cos(−gradient, weights)"),
        Metric("fourier_top8", "top-8 Fourier power share", group="Embedding Fourier: top-8 power share"),
        Metric("grok_epoch", "epoch test acc ≥ 0.9 (nan: never)", "min", per="run"),
        Metric("collapse_epoch", "epoch of softmax collapse (≥ 50%; nan: never)", per="run"),
        *DIVERGENCE_METRICS,
    )
    headline = "test_acc"
    tiny = {"p": 11, "epochs": 20, "eval_every": 10, "width": 16}
    batchable = frozenset({"seed", "weight_decay", "lr"})
    primary = ("p", "train_fraction", "softmax_precision", "loss", "optimizer", "weight_decay", "lr", "epochs",
               "seed")
    presets = {
        "precision_vs_weight_decay": {
            "about": "The epoch at which test accuracy passes 90% (blank: never within the budget) over the "
                     "softmax's float precision and the weight decay (Prieto et al. 2025).",
            "grid": {"softmax_precision": ["float16", "bfloat16", "float32", "float64"],
                     "weight_decay": [0.0, 0.1, 1.0, 3.0]},
            "seeds": [0, 1],
            "dials": {"p": 53, "epochs": 1500, "eval_every": 25, "lr": 3e-3},
            "x": "weight_decay", "y": "softmax_precision", "metric": "grok_epoch", "epoch": "final",
        },
    }

    p = param.Integer(113, bounds=(3, 1000), doc="The modulus: the task is (a + b) mod p, p² pairs.")
    train_fraction = param.Number(0.4, bounds=(0.01, 0.99), doc="Share of the p² pairs used for training.")
    width = param.Integer(200, bounds=(1, 8192), doc="Hidden units per layer (MLP without biases, ReLU).")
    depth = param.Integer(2, bounds=(1, 8), doc="Hidden layers.")
    softmax_precision = param.Selector(default="float32", objects=list(DTYPES),
                                       doc="Float type of the softmax and loss (the logits are cast to it).")
    loss = param.Selector(default="ce", objects=["ce", "stablemax"],
                          doc="ce: softmax cross-entropy; stablemax: StableMax cross-entropy.")
    optimizer = param.Selector(default="adamw", objects=["adamw", "perp_adamw"],
                               doc="adamw, or perp_adamw: AdamW on ⊥Grad (the gradient's component along the "
                                   "weights removed, per parameter tensor).")
    lr = param.Number(0.01, bounds=(1e-6, 1.0), softbounds=(1e-4, 0.1), doc="Learning rate (full batch).")
    weight_decay = param.Number(0.0, bounds=(0.0, 100.0), doc="AdamW's decoupled weight decay.")
    beta2 = param.Number(0.99, bounds=(0.0, 0.99999), doc="Adam's β₂.")
    adam_eps = param.Number(1e-25, bounds=(0.0, 1.0), doc="Adam's ε (tiny, as in the paper's code: it matters once "
                                                            "gradients vanish).")
    epochs = param.Integer(400, bounds=(1, 1_000_000), doc="Full-batch steps.")
    eval_every = param.Integer(10, bounds=(1, 100_000), doc="Epochs between measurements.")

    def _load(self) -> datasets.Data:
        return datasets.modular_addition(self.p, self.train_fraction, Streams(self).seed("data"))

    def check(self):
        self._load()  # a train fraction leaving no test pairs is refused here, naming the field

    def model_bytes(self) -> int:
        n, d, w = self.p * self.p, 2 * self.p, self.width
        params = d * w + (self.depth - 1) * w * w + w * self.p
        return 4 * (5 * params + n * (d + w * (self.depth + 1) + 4 * self.p))

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, k = group.device, group.c0, group.k
        data = [c._load() for c in group.configs]
        stackd = lambda xs: torch.stack(xs).to(dev)  # noqa: E731
        p = c0.p
        sizes = [2 * p] + [c0.width] * c0.depth + [p]
        weights = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default init, drawn per model from its own stream
            w = [torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=g) for g in group.generators("init")]
            weights.append(torch.stack(w))
        net = ensemble.StackedMLP.of(weights, None, "relu", dev, pad=False)  # the paper's MLP has no biases
        weights = net.tensors()
        grok = np.full(k, np.nan)  # the first measured epoch with test accuracy ≥ 0.9 (nan: never)
        collapse = np.full(k, np.nan)  # the first measured epoch with half the training losses exactly zero
        ctx.put("grok_epoch", ("model",), grok.copy())
        ctx.put("collapse_epoch", ("model",), collapse.copy())
        s = SimpleNamespace(
            k=k, p=p, dt=DTYPES[c0.softmax_precision], loss=c0.loss, perp=c0.optimizer == "perp_adamw",
            net=net, weights=weights, grok=grok, collapse=collapse, spectra=[], snap_epochs=[],
            opt=ensemble.Optimizer(weights, "adam", group.per_model("lr"), weight_decay=group.per_model("weight_decay"),
                                   betas=(0.9, c0.beta2), eps=c0.adam_eps, decoupled=True),
            x_tr=stackd([d.x_train for d in data]), y_tr=stackd([d.y_train for d in data]),  # (K, n, 2p), (K, n)
            x_te=stackd([d.x_test for d in data]), y_te=stackd([d.y_test for d in data]))
        return Plan(total=c0.epochs, every=c0.eval_every, state=s)

    @classmethod
    def _loss_and_grads(cls, s):
        """The full-batch logits, per-example losses (in the softmax's dtype) and the weights' gradients."""
        logits = s.net(s.x_tr)  # (K, n, p) float32
        per_example = per_example_loss(logits.to(s.dt), s.y_tr, s.loss)  # (K, n)
        grads = torch.autograd.grad(per_example.mean(1).float().sum(), s.weights)
        return logits.detach(), per_example.detach(), grads

    @classmethod
    def step(cls, plan, batch, step):
        s = plan.state
        _, per_example, grads = cls._loss_and_grads(s)
        if s.perp:
            grads = [perpendicular(g, w.detach()) for g, w in zip(grads, s.weights)]
        s.opt.step(grads)
        return per_example.mean(1).float()

    @classmethod
    def measure(cls, plan, epoch, step):
        s, k, ctx = plan.state, plan.state.k, plan.ctx
        logits, per_example, grads = cls._loss_and_grads(s)
        with torch.no_grad():
            z_te = s.net(s.x_te)
            test_loss = per_example_loss(z_te.to(s.dt), s.y_te, s.loss).float()
            flat_w = torch.cat([w.reshape(k, -1) for w in s.weights], 1)
            flat_g = torch.cat([g.reshape(k, -1) for g in grads], 1)
            cos = -(flat_g * flat_w).sum(1) / (flat_g.norm(dim=1) * flat_w.norm(dim=1)).clamp_min(1e-30)
            power = fourier_power(s.weights[0][:, :s.p])  # embeddings of the first operand: (K, p//2 + 1)
            ac = power[:, 1:]  # frequency 0 is the mean embedding
            top8 = ac.topk(min(8, ac.shape[1]), dim=1).values.sum(1) / ac.sum(1).clamp_min(1e-30)
        rec = {
            "train_loss": per_example.float().mean(1), "test_loss": test_loss.mean(1),
            "train_acc": (logits.argmax(-1) == s.y_tr).float().mean(1),
            "test_acc": (z_te.argmax(-1) == s.y_te).float().mean(1),
            "sc_fraction": (per_example == 0).float().mean(1),
            "logit_norm": logits.norm(dim=-1).mean(1),
            "grad_weight_cos": cos, "fourier_top8": top8,
        }
        rec = {key: v.cpu().numpy() for key, v in rec.items()}
        s.grok[(rec["test_acc"] >= 0.9) & np.isnan(s.grok)] = epoch
        s.collapse[(rec["sc_fraction"] >= 0.5) & np.isnan(s.collapse)] = epoch
        ctx.put("grok_epoch", ("model",), s.grok.copy())
        ctx.put("collapse_epoch", ("model",), s.collapse.copy())
        s.spectra.append(power.cpu().numpy())
        s.snap_epochs.append(epoch)
        ctx.put("fourier_power", ("model", "snapshot", "frequency"), np.stack(s.spectra, axis=1),
                snapshot=np.array(s.snap_epochs), frequency=np.arange(power.shape[1]))
        return rec

    @classmethod
    def judge(cls, plan, rec, step):
        plan.diverged.update(step, ~np.isfinite(rec["train_loss"]), "loss")  # the last update's too
