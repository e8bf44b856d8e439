"""Label noise: early learning, then memorization of flipped labels.

Arpit et al. 2017 ("A closer look at memorization in deep networks") and Liu et al. 2020 ("Early-learning
regularization prevents memorization of noisy labels"): trained on partly wrong labels, a network first fits the
clean majority (clean test accuracy peaks), then memorizes the flipped examples and test accuracy falls. ELR and
GCE resist the memorization.
"""
from __future__ import annotations

import numpy as np
import param
import torch
import torch.nn.functional as F

from .. import datasets, models
from ..engine import losses
from ..errors import ConfigError, Diverged
from ..noise import labels
from ..probes import metrics
from .base import Study


class LabelNoise(Study):
    key = "label_noise"
    title = "Label noise: early learning, then memorization"
    question = "A net trained on partly wrong labels first learns the clean pattern, then memorizes the flips. When, and what stops it?"
    paper = "Arpit et al. 2017; Liu et al. 2020 (ELR); Zhang & Sabuncu 2018 (GCE)"
    axis = "epoch"
    curves = {
        "Accuracy": ["test_acc", "train_clean_acc", "memorized"],
        "Loss": ["train_loss", "test_loss"],
        "Calibration (test ECE)": ["ece"],
    }
    peak = ("test_acc", "max")
    primary = ("flip_rate", "noise_kind", "width", "depth", "lr", "batch_size", "epochs", "loss", "seed", "dataset")

    flip_rate = param.Number(0.4, bounds=(0.0, 1.0), step=0.05, doc="Fraction of training labels changed (symmetric/pair).")
    noise_kind = param.Selector(default="symmetric", objects=list(labels.KINDS),
                                doc="symmetric: to any other class; pair: class k to k+1; matrix: the transition_matrix dial.")
    transition_matrix = param.List(default=None, allow_None=True,
                                   doc="K×K row-stochastic T[true, noisy] (JSON), used when noise_kind='matrix'.")
    dataset = param.Selector(default="digits", objects=list(datasets.NAMES),
                             doc="digits (sklearn 8×8), blobs, xor (benign-overfitting clusters) or npz (data_path).")
    data_path = param.String(default="", doc="Path to an .npz with arrays X (n, ...) and y (n,), for dataset='npz'.")
    n_train = param.Integer(1200, bounds=(0, None), doc="Training examples (the rest is the clean test set); 0 = two thirds.")
    model = param.Selector(default="mlp", objects=["mlp", "cnn"], doc="MLP, or a small CNN for image data (digits).")
    width = param.Integer(512, bounds=(1, 8192), doc="Hidden units per layer (channels for the CNN).")
    depth = param.Integer(2, bounds=(1, 16), doc="Hidden layers.")
    optimizer = param.Selector(default="adam", objects=["adam", "sgd"], doc="Adam, or SGD with momentum.")
    lr = param.Number(1e-3, bounds=(1e-7, 10.0), softbounds=(1e-4, 1e-1), doc="Learning rate.")
    momentum = param.Number(0.9, bounds=(0.0, 0.999), doc="SGD momentum (optimizer='sgd').")
    weight_decay = param.Number(0.0, bounds=(0.0, 1.0), doc="L2 weight decay.")
    batch_size = param.Integer(128, bounds=(1, 100_000), doc="Examples per step.")
    epochs = param.Integer(100, bounds=(1, 100_000), doc="Passes over the training set.")
    loss = param.Selector(default="ce", objects=list(losses.NAMES),
                          doc="ce: cross-entropy; gce: generalized CE; elr: CE + early-learning regularization.")
    gce_q = param.Number(0.7, bounds=(0.01, 1.0), doc="GCE exponent q (q→0: CE, q=1: MAE).")
    elr_lambda = param.Number(3.0, bounds=(0.0, 100.0), doc="ELR strength λ.")
    elr_beta = param.Number(0.7, bounds=(0.0, 0.999), doc="ELR target momentum β.")
    loss_snapshots = param.Integer(5, bounds=(0, 50), doc="Epochs (evenly spaced) at which per-example losses are kept.")

    def check(self):
        if self.dataset == "npz" and not self.data_path:
            raise ConfigError("data_path", self.data_path, "a path to an .npz file when dataset='npz'")
        data = self._load()
        if self.noise_kind == "matrix":
            labels.transition_matrix("matrix", data.num_classes, matrix=self.transition_matrix)
        if self.model == "cnn" and data.image_shape is None:
            raise ConfigError("model", "cnn", f"'mlp' for data set {self.dataset!r}, which has no image shape")

    def _load(self) -> datasets.Data:
        key = (self.dataset, self.data_path, self.n_train, self.seed)
        if getattr(self, "_data_key", None) != key:
            self._data, self._data_key = datasets.load(self.dataset, self.n_train, self.seed, self.data_path), key
        return self._data

    def execute(self, ctx):
        dev = ctx.device
        data = self._load()
        g = torch.Generator().manual_seed(self.seed)
        T = labels.transition_matrix(self.noise_kind, data.num_classes, self.flip_rate, self.transition_matrix)
        y_noisy, flipped = labels.flip(data.y_train, T, generator=g)
        model = models.build(self.model, input_dim=data.input_dim, width=self.width, depth=self.depth,
                             num_classes=data.num_classes, generator=g, image_shape=data.image_shape).to(dev)
        if self.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        x_tr, x_te = data.x_train.to(dev), data.x_test.to(dev)
        y_tr, y_te, y_true = y_noisy.to(dev), data.y_test.to(dev), data.y_train.to(dev)
        flipped_d = flipped.to(dev)
        n = len(y_tr)
        loss_fn = losses.make(self.loss, num_examples=n, num_classes=data.num_classes, q=self.gce_q,
                              lam=self.elr_lambda, beta=self.elr_beta, device=dev)

        snap_at = set(np.unique(np.linspace(0, self.epochs, self.loss_snapshots).round().astype(int)).tolist()) \
            if self.loss_snapshots else set()
        snaps, snap_epochs = [], []
        ctx.put("flipped", ("example",), flipped.numpy())
        ctx.put("noisy_label", ("example",), y_noisy.numpy())
        ctx.put("true_label", ("example",), data.y_train.numpy())
        classes = np.arange(data.num_classes)
        ctx.put("transition_matrix", ("true_class", "noisy_class"), T.numpy(), true_class=classes, noisy_class=classes)

        def evaluate(epoch: int, step: int, train_loss: float | None):
            model.eval()
            with torch.no_grad():
                z_tr, z_te = _logits(model, x_tr), _logits(model, x_te)
            model.train()
            per_example = F.cross_entropy(z_tr, y_tr, reduction="none")  # loss on the (noisy) training labels
            rec = {
                "epoch": epoch, "step": step,
                "train_loss": train_loss if train_loss is not None else per_example.mean().item(),
                "train_acc": metrics.accuracy(z_tr, y_tr),
                "train_clean_acc": metrics.accuracy(z_tr[~flipped_d], y_true[~flipped_d]),
                "memorized": metrics.accuracy(z_tr[flipped_d], y_tr[flipped_d]),
                "flipped_true_acc": metrics.accuracy(z_tr[flipped_d], y_true[flipped_d]),
                "test_acc": metrics.accuracy(z_te, y_te),
                "test_loss": F.cross_entropy(z_te, y_te).item(),
                "ece": metrics.ece(z_te, y_te),
            }
            if epoch in snap_at:
                snaps.append(per_example.cpu().numpy())
                snap_epochs.append(epoch)
                ctx.put("example_loss", ("snapshot", "example"), np.stack(snaps), snapshot=np.array(snap_epochs))
            ctx.emit(rec)

        step = 0
        evaluate(0, 0, None)
        for epoch in range(1, self.epochs + 1):
            perm = torch.randperm(n, generator=g).to(dev)
            total, count = 0.0, 0
            for start in range(0, n, self.batch_size):
                ctx.check()
                idx = perm[start:start + self.batch_size]
                loss = loss_fn(model(x_tr[idx]), y_tr[idx], idx)
                step += 1
                if not torch.isfinite(loss):
                    raise Diverged(step, "loss")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            evaluate(epoch, step, total / count)


def _logits(model, x, chunk: int = 8192):
    return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)]) if len(x) else model(x)
