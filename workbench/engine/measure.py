"""What the training loop measures for every study that has it, declared once: the shared metrics (divergence,
low-precision rounding, spectra) and the Metric declaration itself, the per-model rounding statistics, and the
spectra snapshots of a stacked MLP."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..probes import spectra

BETTER = ("min", "max", "none")


@dataclass(frozen=True)
class Metric:
    """A measured quantity, declared once on its study: plots, "best", summaries, the run browser and the CLI read
    this, nothing guesses from a name. per="record": a value in every record of the run's axis; per="run": one
    value per model at the end (a sweep maps it too). group: the panel of curves it is drawn in ("" : none)."""

    name: str
    label: str = ""
    better: str = "none"  # "min" | "max" | "none"
    unit: str = ""
    group: str = ""
    per: str = "record"  # "record" | "run"

    def __post_init__(self):
        if self.better not in BETTER:
            raise ValueError(f"metric {self.name!r}: better={self.better!r} is not one of {', '.join(BETTER)}")
        if self.per not in ("record", "run"):
            raise ValueError(f"metric {self.name!r}: per={self.per!r} is not 'record' or 'run'")

    @property
    def title(self) -> str:
        """The label with its unit, for an axis."""
        text = self.label or self.name
        return f"{text} ({self.unit})" if self.unit else text

    def best_index(self, values) -> int | None:
        """Where the best finite value of `values` is (None: none finite, or no direction)."""
        v = np.asarray(values, dtype=float)
        if self.better == "none" or not np.isfinite(v).any():
            return None
        return int(np.nanargmin(v) if self.better == "min" else np.nanargmax(v))

    def best(self, values) -> float:
        i = self.best_index(values)
        return float(np.asarray(values, dtype=float)[i]) if i is not None else float("nan")


def regroup(metrics: tuple, groups: dict[str, list[str]]) -> tuple:
    """The same metrics drawn in other panels, in this order: {panel title: [names]} (names not listed: in none)."""
    where = {name: title for title, names in groups.items() for name in names}
    by_name = {m.name: m for m in metrics}
    missing = set(where) - set(by_name)
    if missing:
        raise ValueError(f"regroup: {', '.join(sorted(missing))} not declared")
    return tuple(replace(by_name[n], group=where[n]) for n in where) + \
        tuple(replace(m, group="") for m in metrics if m.name not in where)


#: what the shared parts of the protocol measure, declared once for every study that uses them
DIVERGENCE_METRICS = (
    Metric("diverged", "share of seeds diverged", "min", per="run"),
    Metric("diverged_step", "step of divergence (-1: never)", per="run"),
)
PRECISION_METRICS = (
    *(Metric(f"overflow_{t}", f"{t} beyond max", "min") for t in ("weights", "activations", "gradients")),
    *(Metric(f"underflow_{t}", f"{t} rounded to 0", "min") for t in ("weights", "activations", "gradients")),
    Metric("loss_scale", "fp16 dynamic loss scale"),
)
SPECTRA_METRICS = (
    Metric("weight_alpha", "weight spectrum tail exponent α", group="Spectra (spectra_every)"),
    Metric("weight_stable_rank", "weight stable rank"),
    Metric("feature_effective_rank", "features' effective rank", group="Spectra (spectra_every)"),
    Metric("feature_dse", "features' diffusion spectral entropy", group="Diffusion spectral entropy"),
    Metric("feature_dsmi", "features' DSMI with the class", group="Diffusion spectral entropy"),
)


def precision_metrics(prec, k: int) -> dict:
    """The per-model rounding statistics since the last call (nan for fp32: every record has the same keys);
    resets them."""
    if prec is None:
        return {m.name: np.full(k, np.nan) for m in PRECISION_METRICS}
    out = {key: v.cpu().numpy() for key, v in prec.stats().items()}
    prec.reset_stats()
    return out


def layer_spectra(net, x, layer: int | None = None, labels=None) -> tuple[list, list, dict]:
    """For a stacked MLP (engine.ensemble.StackedMLP), per model: the eigenvalues of a hidden layer's WᵀW/N (default
    the first hidden-to-hidden layer, the input layer for a one-hidden-layer net) and of the last hidden features'
    covariance on x (K, n, ...), with the tail exponent, stable rank and effective rank (nan for a non-finite model)
    and the layer's aspect ratio q; the features' diffusion spectral entropy, and their diffusion spectral mutual
    information with `labels` (K, n) (nan without labels; Liao et al. 2023)."""
    j = (1 if net.n_layers > 2 else 0) if layer is None else layer
    with torch.no_grad():
        features = net._layers(net.params, x)[0][-1]  # the input of the output layer: (K, n, width)
    w_ev, f_ev, out = [], [], {m.name: [] for m in SPECTRA_METRICS}
    for m in range(net.k):
        w = net.params[f"w{j}"][m].detach()  # (in, out)
        w = w if w.shape[0] >= w.shape[1] else w.T
        if not torch.isfinite(w).all() or not torch.isfinite(features[m]).all():
            w_ev.append(np.full(w.shape[1], np.nan))
            f_ev.append(np.full(features.shape[-1], np.nan))
            for v in out.values():
                v.append(np.nan)
            continue
        w_ev.append(spectra.esd(w))
        f_ev.append(spectra.covariance_spectrum(features[m]))
        out["weight_alpha"].append(spectra.power_law_fit(w_ev[-1], min_tail=5)["alpha"])
        out["weight_stable_rank"].append(spectra.stable_rank(w))
        out["feature_effective_rank"].append(spectra.effective_rank(f_ev[-1], of="eigen"))  # of the features
        sigma = spectra.bandwidth(features[m])  # one kernel for the entropy and the mutual information
        out["feature_dse"].append(spectra.diffusion_spectral_entropy(features[m], sigma=sigma))
        out["feature_dsmi"].append(np.nan if labels is None else spectra.diffusion_spectral_mi(
            features[m], labels[m], sigma=sigma, total=out["feature_dse"][-1]))
    out = {name: np.array(v, dtype=float) for name, v in out.items()}
    out["weight_q"] = np.full(net.k, w.shape[1] / w.shape[0])
    return w_ev, f_ev, out


class SpectraLog:
    """Spectra snapshots every `every` steps of the run's axis (0: none), kept in the run's dataset (dims: model,
    spectrum_snapshot, eigenvalue index); `record` returns the scalar summaries for the step's record, nan between
    snapshots (and for models that are not stacked MLPs) so that every record has the same keys."""

    def __init__(self, ctx, every: int):
        self.ctx, self.every = ctx, every
        self.steps, self.weights, self.features = [], [], []

    def record(self, net, x, step: int, last: bool = False, k: int | None = None, labels=None) -> dict:
        if not self.every or (step % self.every and not last) or not hasattr(net, "n_layers"):
            return {m.name: np.full(k or net.k, np.nan) for m in SPECTRA_METRICS}
        w_ev, f_ev, out = layer_spectra(net, x, labels=labels)
        self.steps.append(step)
        self.weights.append(np.stack(w_ev))
        self.features.append(np.stack(f_ev))
        self.ctx.put("weight_eigenvalues", ("model", "spectrum_snapshot", "weight_eigen"), np.stack(self.weights, 1),
                     spectrum_snapshot=np.array(self.steps))
        self.ctx.put("feature_eigenvalues", ("model", "spectrum_snapshot", "feature_eigen"),
                     np.stack(self.features, 1))
        self.ctx.put("weight_q", ("model",), out.pop("weight_q"))
        return out
