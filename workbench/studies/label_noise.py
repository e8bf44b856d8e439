"""Label noise: early learning, then memorization of flipped labels.

Arpit et al. 2017 ("A closer look at memorization in deep networks") and Liu et al. 2020 ("Early-learning
regularization prevents memorization of noisy labels"): trained on partly wrong labels, a network first fits the
clean majority (clean test accuracy peaks), then memorizes the flipped examples and test accuracy falls. ELR and
GCE resist the memorization.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import param
import torch

from .. import datasets, models
from ..engine import ensemble, losses
from ..engine.group import Streams
from ..engine.loop import Plan
from ..engine.measure import DIVERGENCE_METRICS, PRECISION_METRICS, SPECTRA_METRICS, Metric
from ..engine.precision import Precision
from ..errors import ConfigError
from ..noise import labels
from ..probes import metrics
from ..plugins import Choice, is_import_path
from .base import Study, precision_dial


class LabelNoise(Study):
    key = "label_noise"
    title = "Label noise: early learning, then memorization"
    question = "A net trained on partly wrong labels first learns the clean pattern, then memorizes the flips. When, and what stops it?"
    paper = "Arpit et al. 2017; Liu et al. 2020 (ELR); Zhang & Sabuncu 2018 (GCE)"
    finding = "Clean test accuracy climbs first, peaks, then falls as the net memorizes the flipped labels (watch the flipped fit to noisy label rise). ELR and GCE keep the peak."
    claims = ('early_learning', 'elr', 'regret', 'double_descent', 'small_loss', 'dropout', 'data_diet', 'dsmi',
              'long_tail', 'xor_grokking', 'dp_noise', 'pretrain_noise',
              'lottery_noise')
    axis = "epoch"
    metrics = (
        Metric("test_acc", "clean test accuracy", "max", group="Accuracy"),
        Metric("train_clean_acc", "train acc (clean subset)", "max", group="Accuracy"),
        Metric("memorized", "flipped fit to noisy label", "min", group="Accuracy"),
        Metric("train_acc", "train acc (noisy labels)", "max"),
        Metric("flipped_true_acc", "flipped predicted as true", "max"),
        Metric("train_loss", "train loss", "min", group="Loss"),
        Metric("train_loss_full", "train loss (whole set, at the measurement)", "min"),
        Metric("test_loss", "test loss", "min", group="Loss"),
        Metric("ece", "test ECE", "min", group="Calibration (test ECE)"),
        Metric("grad_noise_scale", "gradient noise scale B_simple", group="Gradient noise scale (noise_scale)"),
        Metric("selected", "share of batch examples the selection keeps", group="Sample selection"),
        Metric("selected_flipped", "flipped share of the examples kept"),
        Metric("density", "share of the weights kept", group="Weights kept (prune_rounds)"),
        Metric("probe_acc", "linear probe on the frozen features: clean test digits", "max", per="run"),
        Metric("probe_acc_shifted", "linear probe on the frozen features: shifted test digits", "max", per="run"),
        *PRECISION_METRICS, *SPECTRA_METRICS, *DIVERGENCE_METRICS,
    )
    headline = "test_acc"
    tiny = {"epochs": 2, "n_train": 200, "width": 16, "loss_snapshots": 2, "spectra_every": 1}
    batchable = frozenset({"seed", "flip_rate", "noise_kind", "transition_matrix", "lr", "momentum", "weight_decay",
                           "gce_q", "elr_lambda", "elr_beta", "keep_fraction", "dropout", "grad_noise",
                           "noise_correlation"})
    applies = {"gce_q": ("loss", ("gce",)), "elr_lambda": ("loss", ("elr",)), "elr_beta": ("loss", ("elr",)),
               "keep_fraction": ("selection", ("fixed_k",)), "dropout": ("model", ("mlp",)),
               "selection_warmup": ("selection", ("fixed_k", "adaptive_k")),
               "momentum": ("optimizer", ("sgd",)), "transition_matrix": ("noise_kind", ("matrix",)),
               "input_dim": ("dataset", ("xor",)), "separation": ("dataset", ("xor",)),
               "probe_shift": ("linear_probe", (True,))}
    presets = {
        "double_descent": {
            "about": "Model-wise double descent (Nakkiran et al. 2019): with 20% flips the test error peaks where the "
                     "net starts to fit every noisy label (width ~16 here) and falls again beyond; without flips "
                     "it only falls.",
            "grid": {"width": [2, 4, 8, 16, 32, 64, 128, 256, 1024], "flip_rate": [0.0, 0.2]},
            "seeds": [0, 1],
            "dials": {"n_train": 500, "depth": 1, "batch_size": 500, "lr": 2e-3, "epochs": 1500, "eval_every": 50,
                      "loss_snapshots": 0},
            "x": "width", "y": "flip_rate", "metric": "test_acc", "epoch": "final",
        },
        "spectra_vs_flip_rate": {
            "about": "What memorizing flipped labels does to the spectra: the hidden features' effective rank and "
                     "the weight spectrum's power-law tail exponent over flip rate × width (snapshots every 20 "
                     "epochs; the Spectra tab and wb.viz.spectra_plot show the spectra themselves).",
            "grid": {"flip_rate": [0.0, 0.2, 0.4, 0.6], "width": [128, 512]},
            "seeds": [0, 1],
            "dials": {"epochs": 60, "spectra_every": 20, "loss_snapshots": 0},
            "x": "flip_rate", "y": "width", "metric": "feature_effective_rank", "epoch": "final",
        },
        "early_learning": {
            "about": "Early learning then memorization over flip rate x width: the drop from the peak of clean test "
                     "accuracy to its final value (Arpit et al. 2017).",
            "grid": {"flip_rate": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "width": [16, 32, 64, 128, 256, 512]},
            "seeds": [0, 1, 2],
            "dials": {"epochs": 60, "loss_snapshots": 0},
            "x": "flip_rate", "y": "width", "metric": "test_acc", "epoch": "peak_minus_final",
        },
    }
    primary = ("flip_rate", "noise_kind", "width", "depth", "lr", "batch_size", "epochs", "loss", "seed", "dataset")

    flip_rate = param.Number(0.4, bounds=(0.0, 1.0), step=0.05, doc="Fraction of training labels changed (symmetric/pair).")
    noise_kind = param.Selector(default="symmetric", objects=list(labels.KINDS),
                                doc="symmetric: to any other class; pair: class k to k+1; matrix: the transition_matrix dial.")
    transition_matrix = param.List(default=None, allow_None=True,
                                   doc="K×K row-stochastic T[true, noisy] (JSON), used when noise_kind='matrix'.")
    dataset = Choice(default="digits", objects=list(datasets.NAMES), what="a map-style data set", doc=(
        "digits (sklearn 8×8), blobs, xor (benign-overfitting clusters); your own: npz (an .npz at data_path), "
        "folder (an image folder by class at data_path), hf (a Hugging Face dataset saved at data_path), or an "
        "import path module:attr naming a map-style torch Dataset of (input, label) or a function returning one. "
        "Converted once; its content's digest is part of the run id."))
    data_path = param.String(default="", doc="dataset='npz': an .npz with arrays X (n, ...) and y (n,); 'folder': a "
                             "folder with one subfolder of images per class; 'hf': a folder written by "
                             "Dataset.save_to_disk (or a dataset's name in the local Hugging Face cache).")
    n_train = param.Integer(1200, bounds=(0, None), doc="Training examples (the rest is the clean test set); 0 = two thirds.")
    input_dim = param.Integer(50, bounds=(2, 100_000), doc="dataset='xor': the input dimension d (d ≫ n_train is "
                              "the benign-overfitting setting).")
    separation = param.Number(3.0, bounds=(0.0, 1000.0), doc="dataset='xor': the clusters' distance ‖μ‖ from the "
                              "origin (the noise is N(0, I_d)).")
    imbalance = param.Number(1.0, bounds=(1.0, 1000.0), doc="Long-tailed training set: the largest class holds this "
                             "many times the examples of the smallest, class sizes falling exponentially with the "
                             "class index (class 0 the head); 1: as drawn. The test set is left as it is.")
    model = Choice(default="mlp", objects=["mlp", "cnn"], what="a model factory", doc=(
        "MLP, a small CNN for image data (digits), or your own: an import path module:function naming a factory "
        "that returns a torch.nn.Module mapping (B, input_dim) to (B, num_classes) logits, called with those of "
        "input_dim, num_classes, image_shape, width, depth and generator it takes (see docs/bring-your-own.md)."))
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
    selection = param.Selector(default="all", objects=list(losses.SELECTIONS),
                               doc="Which examples of each batch a step learns from: all; fixed_k: the keep_fraction "
                                   "lowest-loss ones; adaptive_k: those below a running mean of the loss (Adaptive-k, "
                                   "no noise rate needed); oracle: those whose labels were not flipped.")
    keep_fraction = param.Number(0.6, bounds=(0.01, 1.0), step=0.05,
                                 doc="Share of each batch kept by selection='fixed_k' (1 − the noise rate is its "
                                     "best value, which a user rarely knows).")
    selection_warmup = param.Integer(5, bounds=(0, 100_000),
                                     doc="Epochs that learn from every example before fixed_k / adaptive_k select "
                                         "(the early-learning phase, when losses start to tell clean from flipped).")
    dropout = param.Number(0.0, bounds=(0.0, 0.95), step=0.05,
                           doc="Dropout rate of the MLP's hidden units in training (a compression of the features "
                               "against memorizing noisy labels); 0: none.")
    grad_noise = param.Number(0.0, bounds=(0.0, 1000.0), doc="Gaussian noise of this std added to every gradient "
                              "coordinate before each step (DP-SGD's noise, without its clipping); 0: none.")
    noise_correlation = param.Number(0.0, bounds=(0.0, 1.0), step=0.05,
                                     doc="Anti-correlation β of the gradient noise across steps: step t adds "
                                         "grad_noise·(ξ_t − β·ξ_{t−1}). 0: independent (DP-SGD); 1: consecutive "
                                         "draws cancel in the sum (Koloskova et al. 2023).")
    prune_rounds = param.Integer(0, bounds=(0, 60), doc="Iterative magnitude pruning (Frankle & Carbin 2019; "
                                 "sparse double descent): after every `epochs` epochs, remove prune_fraction of the "
                                 "remaining weights of smallest magnitude (over all layers, biases kept), rewind the "
                                 "rest to their initial values and train `epochs` epochs again, this many times. "
                                 "The epoch axis runs over all rounds. MLP only; 0: off.")
    prune_fraction = param.Number(0.2, bounds=(0.01, 0.95), step=0.05,
                                  doc="Share of the remaining weights each pruning round removes.")
    linear_probe = param.Boolean(False, doc="At the end, freeze the net and fit a linear probe (logistic "
                                            "regression) on its last hidden features: on half the clean test set, "
                                            "scored on the other half (probe_acc), and the same with every test "
                                            "image moved probe_shift pixels (probe_acc_shifted: out of domain). "
                                            "Label noise in pre-training, seen downstream. MLP on images only.")
    probe_shift = param.Integer(2, bounds=(1, 16), doc="Pixels each test image moves (up, down, left or right) "
                                                       "for the out-of-domain probe.")
    loss_snapshots = param.Integer(5, bounds=(0, 50), doc="Epochs (evenly spaced) at which per-example losses and "
                                   "data-diet scores (EL2N, GraNd) are kept.")
    eval_every = param.Integer(1, bounds=(1, 10_000), doc="Epochs between measurements (the last epoch is always measured).")
    noise_scale = param.Boolean(False, doc="Measure the gradient noise scale B_simple = tr Σ / |G|² of the training "
                                "loss (cross-entropy on the training labels) over the whole training set at every "
                                "measurement (McCandlish et al. 2018: the batch size beyond which larger batches "
                                "stop saving steps). MLP only.")
    precision = precision_dial()
    spectra_every = param.Integer(0, bounds=(0, 100_000), doc="Epochs between spectra snapshots (a hidden layer's "
                                  "weight spectrum and power-law tail, the last hidden features' covariance "
                                  "spectrum and effective rank); 0: none. MLP only.")

    def check(self):
        if self.dataset in ("npz", "folder", "hf") and not self.data_path:
            raise ConfigError("data_path", self.data_path, {"npz": "a path to an .npz file when dataset='npz'",
                                                            "folder": "a folder of images by class when "
                                                                      "dataset='folder'",
                                                            "hf": "a saved Hugging Face dataset when dataset='hf'"}
                              [self.dataset])
        data = self._load()
        if self.noise_kind == "matrix":
            labels.transition_matrix("matrix", data.num_classes, matrix=self.transition_matrix)
        if self.model == "cnn" and data.image_shape is None:
            raise ConfigError("model", "cnn", f"'mlp' for data set {self.dataset!r}, which has no image shape")
        if self.model != "mlp" and self.precision != "fp32":
            raise ConfigError("precision", self.precision, f"fp32 with model={self.model!r} (low precision runs on "
                                                           "the MLP)")
        if self.model != "mlp" and self.dropout:
            raise ConfigError("dropout", self.dropout, f"0 with model={self.model!r} (dropout is a dial of the MLP)")
        if is_import_path(self.model):
            self._factory_params(data)
        if self.prune_rounds and self.model != "mlp":
            raise ConfigError("prune_rounds", self.prune_rounds, f"0 with model={self.model!r} (pruning acts on the "
                                                                 "MLP's weights)")
        if self.prune_rounds and self.epochs % self.eval_every:
            raise ConfigError("eval_every", self.eval_every, f"a divisor of epochs={self.epochs} with prune_rounds "
                                                             "(every round's end is measured)")
        if self.linear_probe and self.model != "mlp":
            raise ConfigError("linear_probe", True, f"false with model={self.model!r} (the probe reads the MLP's "
                                                    "last hidden features)")
        if self.linear_probe and data.image_shape is None:
            raise ConfigError("linear_probe", True, f"false for data set {self.dataset!r}, which has no image shape "
                                                    "(the out-of-domain probe moves the images)")
        if self.noise_scale and self.model != "mlp":
            raise ConfigError("noise_scale", True, f"false with model={self.model!r} (measured on the MLP)")
        prec = self.make_precision()
        if prec is not None:
            prec.check_dims({"the input dimension": data.input_dim, "width": self.width})

    def make_precision(self, k: int = 1, device="cpu", generators=None) -> Precision | None:
        """The rounding of this config's training (None for fp32); `generators`: the models' rounding streams."""
        if self.precision == "fp32":
            return None
        return Precision(self.precision, num_models=k, device=device, generators=generators)

    def data_files(self) -> list[str]:
        return [self.data_path] if self.dataset == "npz" else []

    def data_contents(self) -> dict[str, str]:
        user = self.dataset in ("folder", "hf") or is_import_path(self.dataset)
        return {f"{self.dataset}:{self.data_path}" if self.data_path else self.dataset: self._load().digest} if user \
            else {}

    def _load(self) -> datasets.Data:
        seed = Streams(self).seed("data")
        options = dict(dim=self.input_dim, separation=self.separation) if self.dataset == "xor" else {}
        key = (self.dataset, self.data_path, self.n_train, seed, self.imbalance, tuple(options.values()))
        if getattr(self, "_data_key", None) != key:
            data = datasets.load(self.dataset, self.n_train, seed, self.data_path, **options)
            self._data, self._data_key = datasets.long_tailed(data, self.imbalance), key
        return self._data

    def _factory_params(self, data) -> int:
        """A user's model factory tried once for this data (models.check_factory): its parameter count."""
        key = (self.model, data.input_dim, data.num_classes, data.image_shape, self.width, self.depth)
        if getattr(self, "_factory_key", None) != key:
            self._factory_n = models.check_factory(self.model, input_dim=data.input_dim, num_classes=data.num_classes,
                                                   image_shape=data.image_shape, width=self.width, depth=self.depth)
            self._factory_key = key
        return self._factory_n

    def model_bytes(self) -> int:
        data = self._load()
        n, d, c, w = len(data.y_train) + len(data.y_test), data.input_dim, data.num_classes, self.width
        params = self._factory_params(data) if is_import_path(self.model) else d * w + (self.depth - 1) * w * w + w * c
        # parameters with grad and optimizer state; per-example data and labels; the evaluation's activations
        return 4 * (4 * params + n * (d + 4) + n * w * (self.depth + 1) + len(data.y_train) * c * 2)

    # -- the hooks of the training loop (engine/loop.py) --------------------------------------------------------
    @classmethod
    def setup(cls, ctx, group) -> Plan:
        dev, c0, k, configs = group.device, group.c0, group.k, group.configs
        data = [c._load() for c in configs]  # the split depends on the data seed: per-model data
        num_classes = data[0].num_classes
        matrices = [labels.transition_matrix(c.noise_kind, num_classes, c.flip_rate, c.transition_matrix)
                    for c in configs]
        flips = [labels.flip(d.y_train, t, generator=g) for d, t, g in zip(data, matrices, group.generators("noise"))]
        modules = [models.build(c.model, input_dim=d.input_dim, width=c.width, depth=c.depth,
                                num_classes=num_classes, generator=g, image_shape=d.image_shape)
                   for c, d, g in zip(configs, data, group.generators("init"))]
        net = ensemble.stack(modules, dev, c0.make_precision(k, dev, group.generators("rounding")))
        hyper = {name: group.per_model(name) for name in ("lr", "momentum", "weight_decay", "gce_q", "elr_lambda",
                                                          "elr_beta", "keep_fraction", "dropout", "grad_noise",
                                                          "noise_correlation")}
        if hyper["dropout"].any():  # masks from a stream of their own (salt 1 of `order`): a rate of 0 draws nothing
            net.dropout = ensemble.Dropout(hyper["dropout"], [torch.Generator().manual_seed(sd)
                                                              for sd in group.seeds("order", 1)])
        if hyper["grad_noise"].any():  # from a stream of its own (salt 1 of `noise`): σ = 0 draws nothing
            net.grad_noise = ensemble.GradientNoise(hyper["grad_noise"], hyper["noise_correlation"], [
                torch.Generator().manual_seed(sd) for sd in group.seeds("noise", 1)])
        stackd = lambda xs: torch.stack(xs).to(dev)  # noqa: E731
        y_tr, flipped = stackd([f[0] for f in flips]), stackd([f[1] for f in flips])  # noisy labels, mask (K, n)
        selection = losses.Selection(c0.selection, k, keep=hyper["keep_fraction"], flipped=flipped, device=dev)
        n = y_tr.shape[1]
        epochs = c0.epochs * (c0.prune_rounds + 1)  # every pruning round trains c0.epochs epochs
        snap_at = set(np.unique(np.linspace(0, epochs, c0.loss_snapshots).round().astype(int)).tolist()) \
            if c0.loss_snapshots else set()

        def fresh():  # the optimizer and the loss (ELR's targets), new for each pruning round
            return (ensemble.Optimizer(net.tensors(), c0.optimizer, hyper["lr"], hyper["momentum"],
                                       hyper["weight_decay"]),
                    losses.make(c0.loss, num_models=k, num_examples=n, num_classes=num_classes, q=hyper["gce_q"],
                                lam=hyper["elr_lambda"], beta=hyper["elr_beta"], device=dev, selection=selection))
        opt, loss_fn = fresh()
        s = SimpleNamespace(
            k=k, n=n, batch_size=c0.batch_size, order=group.generators("order"), opt=opt, loss_fn=loss_fn,
            fresh=fresh, round_epochs=c0.epochs, prune=_Pruning(net, c0.prune_fraction) if c0.prune_rounds else None,
            selection=selection, warmup=c0.selection_warmup, noise_scale=c0.noise_scale,
            x_tr=stackd([d.x_train for d in data]), x_te=stackd([d.x_test for d in data]),  # (K, n, ...)
            y_true=stackd([d.y_train for d in data]), y_te=stackd([d.y_test for d in data]), y_tr=y_tr,
            flipped=flipped, running=torch.zeros(k, device=dev),
            # per-example loss snapshots fall on measured epochs
            snap_at={e - e % c0.eval_every if e < epochs else e for e in snap_at}, snaps={}, snap_epochs=[],
            # a measured loss far above chance level counts as a divergence (the precision study's dial)
            spike_limit=getattr(c0, "divergence_factor", 0.0) * math.log(num_classes))
        s.probe = None
        if c0.linear_probe:  # each model's split of its test set, and its shifted test images (the probe stream)
            n_te, split, moved = s.x_te.shape[1], [], []
            for m, st in enumerate(group.streams):
                g = st.fresh("probe")
                split.append(torch.randperm(n_te, generator=g) < n_te // 2)
                moved.append(datasets.shifted(s.x_te[m].cpu(), data[m].image_shape, c0.probe_shift, g))
            s.probe = SimpleNamespace(train=split, x_shifted=stackd(moved))
        for name in ("probe_acc", "probe_acc_shifted"):  # nan unless the probe runs at the end
            ctx.put(name, ("model",), np.full(k, np.nan))
        ctx.put("flipped", ("model", "example"), flipped.cpu().numpy())
        ctx.put("noisy_label", ("model", "example"), y_tr.cpu().numpy())
        ctx.put("true_label", ("model", "example"), s.y_true.cpu().numpy())
        classes = np.arange(num_classes)
        ctx.put("transition_matrix", ("model", "true_class", "noisy_class"), np.stack([t.numpy() for t in matrices]),
                true_class=classes, noisy_class=classes)
        return Plan(total=epochs, every=c0.eval_every, net=net, spectra_every=c0.spectra_every, spectra_x=s.x_te,
                    spectra_y=s.y_te,
                    state=s)

    @classmethod
    def batches(cls, plan, epoch):
        s = plan.state
        if s.prune is not None and epoch > 1 and (epoch - 1) % s.round_epochs == 0:  # a round ends: prune, rewind
            s.prune.next_round()
            s.opt, s.loss_fn = s.fresh()
        s.running.zero_()
        s.selection.active = epoch > s.warmup
        perms = torch.stack([torch.randperm(s.n, generator=g) for g in s.order]).to(s.x_tr.device)  # (K, n)
        return ensemble.batches(perms, s.batch_size)  # per-model minibatch indices (K, B)

    @classmethod
    def step(cls, plan, idx, step):
        s = plan.state
        per_model = ensemble.train_step(plan.net, s.opt, s.loss_fn, s.x_tr, s.y_tr, idx)  # (K,)
        if s.prune is not None:
            s.prune.apply()
        s.running += per_model * idx.shape[1]
        return per_model

    @classmethod
    def measure(cls, plan, epoch, step):
        s, net = plan.state, plan.net
        with torch.no_grad():
            z_tr, z_te = _logits(net, s.x_tr), _logits(net, s.x_te)  # (K, n, C)
        per_example = losses.cross_entropy(z_tr, s.y_tr)  # (K, n) loss on the (noisy) training labels
        pred_tr, pred_te = z_tr.argmax(-1), z_te.argmax(-1)
        rec = {
            "train_loss": per_example.mean(1) if epoch == 0 else s.running / s.n,  # the epoch's mean batch loss
            "train_loss_full": per_example.mean(1),
            "grad_noise_scale": _noise_scale(net, s) if s.noise_scale else torch.full((s.k,), float("nan")),
            "train_acc": _mean(pred_tr == s.y_tr),
            "train_clean_acc": _mean(pred_tr == s.y_true, ~s.flipped),
            "memorized": _mean(pred_tr == s.y_tr, s.flipped),
            "flipped_true_acc": _mean(pred_tr == s.y_true, s.flipped),
            "test_acc": _mean(pred_te == s.y_te),
            "test_loss": losses.cross_entropy(z_te, s.y_te).mean(1),
            "ece": torch.tensor([metrics.ece(z_te[i], s.y_te[i]) for i in range(s.k)]),
            "density": s.prune.density() if s.prune is not None else torch.full((s.k,), float("nan")),
            **s.selection.take_kept(),  # over the steps since the last measurement (nan before the first step)
        }
        if epoch == plan.total:  # which test points each model gets right at the end (regret under label noise)
            plan.ctx.put("test_correct", ("model", "test_example"), (pred_te == s.y_te).cpu().numpy())
            if s.probe is not None:
                for name, acc in _probe(net, s).items():
                    plan.ctx.put(name, ("model",), acc)
        if epoch in s.snap_at:  # per training example: the loss, and the data-diet scores (Paul et al. 2021)
            s.snap_epochs.append(epoch)
            scores = {"example_loss": per_example, "example_el2n": _el2n(z_tr, s.y_tr)}
            if hasattr(net, "example_gradient_norms"):  # stacked MLPs (nan for the CNN)
                scores["example_grand"] = torch.cat([net.example_gradient_norms(
                    s.x_tr[:, i:i + 2048], lambda z, i=i: losses.cross_entropy(z, s.y_tr[:, i:i + 2048]).sum(1))
                    for i in range(0, s.n, 2048)], dim=1)
            else:
                scores["example_grand"] = torch.full_like(per_example, float("nan"))
            for name, v in scores.items():
                s.snaps.setdefault(name, []).append(v.cpu().numpy())
                plan.ctx.put(name, ("model", "snapshot", "example"), np.stack(s.snaps[name], axis=1),
                             snapshot=np.array(s.snap_epochs))
        return {key: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for key, v in rec.items()}

    @classmethod
    def judge(cls, plan, rec, step):
        if plan.state.spike_limit:
            plan.diverged.update(step, rec["train_loss"] > plan.state.spike_limit, "loss spike")


def _noise_scale(net, s, chunk: int = 2048) -> torch.Tensor:
    """B_simple of each model's training loss (cross-entropy on its training labels) over its whole training set:
    exact per-example gradient norms of the stacked MLP, the set in chunks whose sums add up."""
    per_sum, sums = torch.zeros(s.k, device=s.x_tr.device), None
    for i in range(0, s.n, chunk):
        x, y = s.x_tr[:, i:i + chunk], s.y_tr[:, i:i + chunk]
        per_example, part = net.per_example_gradients(x, lambda z: losses.cross_entropy(z, y).sum(1))
        per_sum += per_example.sum(1)
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    return ensemble.noise_scale(per_sum, sums, s.n)


def _mean(hit: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-model fraction of True in `hit` (K, n), over the examples where `mask` is True (nan where none)."""
    hit = hit.float()
    if mask is None:
        return hit.mean(1)
    m = mask.float()
    return (hit * m).sum(1) / m.sum(1)  # 0/0 -> nan for a model with no such examples


class _Pruning:
    """Iterative magnitude pruning of a stacked MLP, each model on its own: masks over every weight matrix (the
    output layer's zero padding excluded), the initial weights to rewind to, and the weights kept zero after
    every step."""

    def __init__(self, net, fraction: float):
        self.net, self.fraction = net, fraction
        self.names = [n for n in net.params if n.startswith("w")]
        self.initial = {n: p.detach().clone() for n, p in net.params.items()}
        self.masks = {n: torch.ones_like(net.params[n], dtype=torch.bool) for n in self.names}
        self.masks[self.names[-1]][..., net.classes:] = False  # the padded logits' columns: zero, never counted
        self.total = self._kept()  # (K,) weights that exist

    def _kept(self) -> torch.Tensor:
        return sum(self.masks[n].sum((1, 2)) for n in self.names)

    @torch.no_grad()
    def next_round(self) -> None:
        """Remove `fraction` of each model's remaining weights, the smallest in magnitude over all layers; rewind
        the others (and the biases) to their initial values."""
        mags = torch.cat([torch.where(self.masks[n], self.net.params[n].abs(), float("inf")).flatten(1)
                          for n in self.names], dim=1)  # (K, all weights): pruned ones last
        drop = (self._kept().double() * self.fraction).round().long()
        for m in range(mags.shape[0]):
            if drop[m] > 0:
                cut = mags[m].kthvalue(int(drop[m])).values
                for n in self.names:  # ties at the cut all go: a round may remove a few more
                    self.masks[n][m] &= self.net.params[n][m].abs() > cut
        for n, p in self.net.params.items():
            p.copy_(self.initial[n])
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for n in self.names:
            self.net.params[n].mul_(self.masks[n])

    def density(self) -> torch.Tensor:
        return self._kept().float() / self.total.float()


def _probe(net, s) -> dict[str, np.ndarray]:
    """Each model's linear-probe accuracy on its frozen last hidden features, on the clean test images and on them
    shifted (probes.linear.probe_accuracy; the same split of the test set for both)."""
    from ..probes.linear import probe_accuracy

    out = {}
    for name, x in (("probe_acc", s.x_te), ("probe_acc_shifted", s.probe.x_shifted)):
        with torch.no_grad():
            features = net._layers(net.params, x)[0][-1]  # (K, n, width): the output layer's input
        out[name] = np.array([probe_accuracy(features[m], s.y_te[m], s.probe.train[m]) for m in range(s.k)])
    return out


def _el2n(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """EL2N (Paul et al. 2021): |softmax(z) − onehot(y)|₂ per example (K, n)."""
    p = torch.softmax(logits, -1)
    return (p - torch.nn.functional.one_hot(y, p.shape[-1]).to(p.dtype)).norm(dim=-1)


def _logits(net, x, chunk: int = 8192):
    return torch.cat([net(x[:, i:i + chunk]) for i in range(0, x.shape[1], chunk)], dim=1)
