"""Precision formats: training with weights, activations and gradients rounded to a narrow number format.

Micikevicius et al. 2018 ("Mixed precision training") and 2022 ("FP8 formats for deep learning"), the OCP
Microscaling formats (Rouhani et al. 2023), and Sun et al. 2025 ("Scaling laws for floating point quantization
training": how exponent and mantissa bits trade off). The format dial means exactly what it says: every rounded
tensor holds only values the format can represent (`workbench.noise.formats`), on any machine.
"""
from __future__ import annotations

import param

from ..engine.precision import SCALES, TENSORS, Precision
from ..noise import formats
from ..engine.measure import regroup
from .label_noise import LabelNoise


class PrecisionStudy(LabelNoise):
    key = "precision"
    title = "Precision formats: low-precision training"
    question = "What does rounding weights, activations and gradients to fp8, fp6, fp4, int or MX formats do to " \
               "training, and where does it break?"
    paper = "Micikevicius et al. 2018, 2022 (FP8); OCP MX (Rouhani et al. 2023); Sun et al. 2025 (FP scaling laws)"
    finding = "With per-tensor scaling fp8 training tracks fp32; narrower formats underflow (watch the gradients rounded to 0) and diverge."
    claims = ('fp8_training', 'fp8_stability', 'noisyquant', 'zeroquant_fp', 'quant_outliers', 'fp_scaling')
    metrics = regroup(LabelNoise.metrics, {
        "Loss": ["train_loss", "test_loss"],
        "Accuracy": ["test_acc", "train_acc"],
        "Gradient underflow (non-zero values rounded to 0)": ["underflow_gradients", "underflow_activations"],
        "Overflow (values beyond the format's max)": ["overflow_weights", "overflow_activations",
                                                       "overflow_gradients"],
    })
    headline = "test_acc"
    tiny = {"epochs": 2, "n_train": 200, "width": 16, "rounding": "stochastic"}
    batchable = frozenset({"seed", "lr", "momentum", "weight_decay", "flip_rate"})
    applies = {**LabelNoise.applies, "exp_bits": ("precision", ("custom",)), "man_bits": ("precision", ("custom",)),
               "block": ("precision", tuple(n for n in formats.NAMES if n.startswith("mx")))}
    primary = ("precision", "exp_bits", "man_bits", "rounding", "scale", "quantize_weights", "quantize_activations",
               "quantize_gradients", "lr", "width", "depth", "epochs", "seed")
    presets = {
        "divergence_map": {
            "about": "Which formats survive which learning rates, without scaling: the share of seeds that diverged "
                     "(a non-finite loss, or one above divergence_factor × chance level) over format × learning "
                     "rate; diverged_step says when.",
            "grid": {"precision": ["fp32", "bf16", "fp16", "fp8_e5m2", "fp8_e4m3", "fp6_e3m2", "fp4_e2m1"],
                     "lr": [0.001, 0.01, 0.1, 1.0]},
            "seeds": [0, 1, 2],
            "dials": {"scale": "none", "epochs": 10, "eval_every": 1},
            "x": "lr", "y": "precision", "metric": "diverged", "epoch": "final",
        },
        "exponent_vs_mantissa": {
            "about": "Final training loss over exponent bits × mantissa bits of a custom float format (per-tensor "
                     "scaled): the trade-off of Sun et al. 2025.",
            "grid": {"exp_bits": [2, 3, 4, 5], "man_bits": [0, 1, 2, 3, 4]},
            "seeds": [0, 1],
            "dials": {"precision": "custom", "scale": "tensor", "epochs": 15, "eval_every": 5},
            "x": "man_bits", "y": "exp_bits", "metric": "train_loss", "epoch": "final",
        },
        "underflow_by_format": {
            "about": "The share of non-zero gradients each format rounds to zero, without and with per-tensor scaling.",
            "grid": {"precision": ["bf16", "fp16", "fp8_e5m2", "fp8_e4m3", "fp6_e2m3", "fp4_e2m1"],
                     "scale": ["none", "tensor"]},
            "seeds": [0, 1],
            "dials": {"epochs": 5},
            "x": "precision", "y": "scale", "metric": "underflow_gradients", "epoch": "final",
        },
    }

    flip_rate = param.Number(0.0, bounds=(0.0, 1.0), step=0.05, doc="Fraction of training labels changed "
                                                                     "(label noise and precision together).")
    width = param.Integer(128, bounds=(1, 8192), doc="Hidden units per layer.")
    epochs = param.Integer(20, bounds=(1, 100_000), doc="Passes over the training set.")
    loss_snapshots = param.Integer(0, bounds=(0, 50), doc="Epochs at which per-example losses are kept.")
    precision = param.Selector(default="fp8_e4m3", objects=["custom", *formats.NAMES],
                               doc="Number format of the rounded tensors; custom: an IEEE-style float with "
                                   "exp_bits and man_bits.")
    exp_bits = param.Integer(4, bounds=(2, 8), doc="Exponent bits of the custom format.")
    man_bits = param.Integer(3, bounds=(0, 10), doc="Mantissa bits of the custom format.")
    rounding = param.Selector(default="nearest", objects=list(formats.ROUNDINGS),
                              doc="nearest (ties to even) or stochastic (unbiased).")
    scale = param.Selector(default="auto", objects=list(SCALES),
                           doc="auto: per tensor for formats of 8 bits or fewer, none otherwise (fp16: dynamic loss "
                               "scale); none; tensor; channel (per output channel / per example).")
    block = param.Integer(32, bounds=(1, 4096), doc="MX formats: elements per shared scale.")
    quantize_weights = param.Boolean(True, doc="Round the weights as the forward pass reads them.")
    quantize_activations = param.Boolean(True, doc="Round the activations entering each layer.")
    quantize_gradients = param.Boolean(True, doc="Round the gradients flowing back out of each layer.")
    divergence_factor = param.Number(2.0, bounds=(0.0, 1000.0),
                                     doc="A measured train loss above this many times chance level (ln C) counts as "
                                         "diverged, as a non-finite one does; 0: only non-finite.")

    def format_name(self) -> str:
        return f"e{self.exp_bits}m{self.man_bits}" if self.precision == "custom" else self.precision

    def make_precision(self, k: int = 1, device="cpu", generators=None) -> Precision | None:
        tensors = [t for t in TENSORS if getattr(self, f"quantize_{t}")]
        if self.format_name() == "fp32" or not tensors:
            return None
        return Precision(self.format_name(), tensors, self.rounding, self.scale, self.block, num_models=k,
                         device=device, generators=generators)
