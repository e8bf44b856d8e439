"""A study: its dials (a param.Parameterized class, declared once) and its run function.

The app's widgets, the CLI's options and the notebooks' parameters cells are all derived from the dials, so a
new study is one new file in this package.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import param
import torch

from ..engine.group import SEED_DIALS
from ..errors import ConfigError
from ..probes import spectra

#: parameters of every Parameterized that are not dials
_NOT_DIALS = {"name"}
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
)


class Study(param.Parameterized):
    """Base class. Subclasses set `key`, `title`, `question`, `paper`, the record axis and the plots, and
    implement `execute(ctx)`."""

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    question: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    axis: ClassVar[str] = "epoch"  # the index of the records the run emits
    #: everything the study measures (Metric declarations); checked when the class is defined
    metrics: ClassVar[tuple] = ()
    #: the headline metric: its best is marked on the curves, the run browser and the CLI show it first
    headline: ClassVar[str] = ""
    #: derived from `metrics`: the panels of curves {title: [metric, ...]} and the per-run results
    curves: ClassVar[dict] = {}
    summaries: ClassVar[tuple] = ()
    #: dials of a run of a second or two: the contract test trains every study with them (a new study sets them)
    tiny: ClassVar[dict] = {}
    #: dials shown first in the app, in this order (the rest follow)
    primary: ClassVar[tuple] = ()
    #: named sweeps a user can launch in one click: {name: {"about", "grid", "seeds", "dials", "x", "y", "metric",
    #: "epoch"}}
    presets: ClassVar[dict] = {}
    #: the notebook in notebooks/ (without .ipynb) that runs this study; default: the key
    notebook: ClassVar[str] = ""
    #: dials that keep tensor shapes: configs differing only in these train together as one program
    batchable: ClassVar[frozenset] = frozenset({"seed"})

    seed = param.Integer(0, bounds=(0, 2**31 - 1), doc="Random seed: every random draw of the run (data split, "
                         "label flips, init, batch order, sampling, rounding), each from its own stream.")
    data_seed = param.Integer(-1, bounds=(-1, 2**31 - 1), doc="Seed of the data split and the data drawn "
                              "(-1: from seed).")
    noise_seed = param.Integer(-1, bounds=(-1, 2**31 - 1), doc="Seed of the noise added to the data: label "
                               "flips, corruption, input noise (-1: from seed).")
    init_seed = param.Integer(-1, bounds=(-1, 2**31 - 1), doc="Seed of the initial weights (-1: from seed).")
    order_seed = param.Integer(-1, bounds=(-1, 2**31 - 1), doc="Seed of the batch order and the other per-step "
                               "draws of training (-1: from seed).")

    def __init_subclass__(cls, **kwargs):
        """A study's declarations are checked when its class is defined, not when a page first draws them."""
        super().__init_subclass__(**kwargs)
        cls._checked = False  # registered (studies.get) only once its declarations pass
        if not cls.key or "key" not in cls.__dict__:
            return
        where = f"study {cls.__name__} ({cls.key!r})"
        names = [m.name for m in cls.metrics]
        if not names:
            raise TypeError(f"{where} declares no metrics (Study.metrics: a tuple of Metric)")
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise TypeError(f"{where} declares {', '.join(sorted(dupes))} more than once")
        if cls.axis in names or "step" in names:
            raise TypeError(f"{where}: the axis {cls.axis!r} and 'step' are not metrics")
        by_name = {m.name: m for m in cls.metrics}
        if cls.headline not in by_name or by_name[cls.headline].better == "none":
            raise TypeError(f"{where}: headline {cls.headline!r} must be a declared metric with better='min' or "
                            f"'max' (declared: {', '.join(names)})")
        for preset, spec in cls.presets.items():
            if spec.get("metric") not in by_name:
                raise TypeError(f"{where}: preset {preset!r} maps {spec.get('metric')!r}, which is not declared")
        cls.curves = {}
        for m in cls.metrics:
            if m.group and m.per == "record":
                cls.curves.setdefault(m.group, []).append(m.name)
        cls.summaries = tuple(m.name for m in cls.metrics if m.per == "run")
        cls._checked = True

    @classmethod
    def metric(cls, name: str) -> Metric:
        """A declared metric by name (KeyError naming the study and what it declares)."""
        for m in cls.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{name!r} is not a metric of study {cls.key!r} (declared: "
                       f"{', '.join(m.name for m in cls.metrics)})")

    @classmethod
    def record_metrics(cls) -> list[str]:
        return [m.name for m in cls.metrics if m.per == "record"]

    @classmethod
    def better(cls, name: str) -> str:
        """The declared direction of a metric: min, max or none (none for a name the study does not declare)."""
        return next((m.better for m in cls.metrics if m.name == name), "none")

    @classmethod
    def label(cls, name: str) -> str:
        return next((m.title for m in cls.metrics if m.name == name), name)

    @classmethod
    def notebook_name(cls) -> str:
        return cls.notebook or cls.key

    # -- dials ------------------------------------------------------------------------------------------------
    @classmethod
    def dials(cls) -> dict[str, param.Parameter]:
        """The dials by name, primary ones first."""
        ps = {n: p for n, p in cls.param.objects("existing").items() if n not in _NOT_DIALS}
        order = [n for n in cls.primary if n in ps] + [n for n in ps if n not in cls.primary]
        return {n: ps[n] for n in order}

    @classmethod
    def defaults(cls) -> dict:
        return {n: p.default for n, p in cls.dials().items()}

    @classmethod
    def changed(cls, values: dict) -> dict:
        """The dials of `values` set away from their defaults (what a run's one-line description shows)."""
        defaults = cls.defaults()
        return {k: v for k, v in sorted(values.items()) if k not in defaults or defaults[k] != v}

    @classmethod
    def configure(cls, **values) -> "Study":
        """A validated instance. Raises ConfigError naming the field, the value and what is allowed."""
        dials = cls.dials()
        for k in values:
            if k not in dials:
                raise ConfigError(k, values[k], f"a dial of study {cls.key!r}: {', '.join(sorted(dials))}")
        clean = {k: coerce(dials[k], k, v) for k, v in values.items()}
        try:
            study = cls(**clean)
        except (ValueError, TypeError) as e:
            # param names the parameter and the bound in its message; find which field it was
            field = next((k for k in clean if f".{k}'" in str(e) or f"'{k}'" in str(e)), "dials")
            raise ConfigError(field, clean.get(field), str(e).split(" must ", 1)[-1].rstrip(".")) from None
        study.check()
        return study

    def check(self) -> None:
        """Cross-field validation; raise ConfigError. Runs before any work starts."""

    def config(self) -> dict:
        """The dial values as plain JSON types."""
        return {n: _plain(getattr(self, n)) for n in self.dials()}

    # -- running ----------------------------------------------------------------------------------------------
    def execute(self, ctx) -> None:
        """Train this one config (a group of one)."""
        type(self).execute_group(ctx, [self])

    @classmethod
    def execute_group(cls, ctx, configs: list["Study"]) -> None:  # pragma: no cover - abstract
        """Train K configs that differ only in `batchable` dials, as one program. Emit one record per `axis` step
        through ctx.emit (each metric a (K,) array) and arrays with a leading "model" dim through ctx.put."""
        raise NotImplementedError

    def data_files(self) -> list[str]:
        """The files this config reads its data from: their contents' digests are part of the run id."""
        return []

    def model_bytes(self) -> int:
        """About how much memory one model of this config needs while training (sizes a sweep's tasks)."""
        return 64 << 20

    @classmethod
    def batchable_dials(cls) -> frozenset:
        """The study's batchable dials and the seeds: what may differ between models trained together."""
        return cls.batchable | {"seed", *SEED_DIALS.values()}

    def group_key(self) -> tuple:
        """Configs with equal keys can share one program."""
        shared = type(self).batchable_dials()
        return tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(self.config().items()) if k not in shared)


def precision_dial(**kw) -> param.Selector:
    """The precision-format dial shared by the studies that train MLPs on the stacked engine."""
    from ..noise import formats

    return param.Selector(default="fp32", objects=list(formats.NAMES), doc=(
        "Number format that weights, activations and gradients are rounded to in training (fp32 master weights "
        "and accumulation; narrow formats scaled per tensor, fp16 with a dynamic loss scale)."), **kw)


def precision_metrics(prec, k: int) -> dict:
    """The per-model rounding statistics since the last call (nan for fp32: every record has the same keys);
    resets them."""
    if prec is None:
        return {m.name: np.full(k, np.nan) for m in PRECISION_METRICS}
    out = {key: v.cpu().numpy() for key, v in prec.stats().items()}
    prec.reset_stats()
    return out


def coerce(p: param.Parameter, field: str, value):
    """Turn strings (from the CLI, a URL or a text box) into the dial's type; check bounds with a clear message."""
    if isinstance(value, str) and not isinstance(p, (param.String, param.Selector)):
        text = value.strip()
        try:
            if isinstance(p, param.Boolean):
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = text.lower() in ("true", "1", "yes")
            elif isinstance(p, param.Integer):
                value = int(text)
            elif isinstance(p, param.Number):
                value = float(text)
            elif isinstance(p, param.List):
                value = None if text in ("", "null", "None") else json.loads(text)
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(field, value, f"{describe(p)}") from None
    if isinstance(p, param.Integer) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(p, param.Boolean):
        if not isinstance(value, bool):
            raise ConfigError(field, value, "true or false")
    elif isinstance(p, param.Integer):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, value, describe(p))
    elif isinstance(p, param.Number):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(field, value, describe(p))
        value = float(value)
    if isinstance(p, param.Number) and p.bounds is not None:
        lo, hi = p.bounds
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(field, value, describe(p))
    if isinstance(p, param.Selector) and value not in p.objects:
        raise ConfigError(field, value, describe(p))
    return value


def describe(p: param.Parameter) -> str:
    """What values a dial allows, in words."""
    if isinstance(p, param.Boolean):
        return "true or false"
    if isinstance(p, param.Selector):
        return "one of " + ", ".join(map(str, p.objects))
    if isinstance(p, param.Number):
        kind = "an integer" if isinstance(p, param.Integer) else "a number"
        lo, hi = p.bounds or (None, None)
        if lo is not None and hi is not None:
            return f"{kind} in [{lo}, {hi}]"
        if lo is not None:
            return f"{kind} >= {lo}"
        if hi is not None:
            return f"{kind} <= {hi}"
        return kind
    if isinstance(p, param.List):
        return "a JSON list (or empty)"
    return "a string"


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def layer_spectra(net, x, layer: int | None = None) -> tuple[list, list, dict]:
    """For a stacked MLP (engine.ensemble.StackedMLP), per model: the eigenvalues of a hidden layer's WᵀW/N (default
    the first hidden-to-hidden layer, the input layer for a one-hidden-layer net) and of the last hidden features'
    covariance on x (K, n, ...), with the tail exponent, stable rank and effective rank (nan for a non-finite model)
    and the layer's aspect ratio q."""
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
    out = {name: np.array(v, dtype=float) for name, v in out.items()}
    out["weight_q"] = np.full(net.k, w.shape[1] / w.shape[0])
    return w_ev, f_ev, out


class SpectraLog:
    """Spectra snapshots every `every` steps of the run's axis (0: none), kept in the run's dataset (dims: model,
    spectrum_snapshot, eigenvalue index); `record` returns the scalar summaries for the step's record, nan between
    snapshots so that every record has the same keys."""

    def __init__(self, ctx, every: int):
        self.ctx, self.every = ctx, every
        self.steps, self.weights, self.features = [], [], []

    def record(self, net, x, step: int, last: bool = False) -> dict:
        if not self.every or (step % self.every and not last):
            return {m.name: np.full(net.k, np.nan) for m in SPECTRA_METRICS}
        w_ev, f_ev, out = layer_spectra(net, x)
        self.steps.append(step)
        self.weights.append(np.stack(w_ev))
        self.features.append(np.stack(f_ev))
        self.ctx.put("weight_eigenvalues", ("model", "spectrum_snapshot", "weight_eigen"), np.stack(self.weights, 1),
                     spectrum_snapshot=np.array(self.steps))
        self.ctx.put("feature_eigenvalues", ("model", "spectrum_snapshot", "feature_eigen"),
                     np.stack(self.features, 1))
        self.ctx.put("weight_q", ("model",), out.pop("weight_q"))
        return out
