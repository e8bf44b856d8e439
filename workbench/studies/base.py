"""A study: its dials (a param.Parameterized class, declared once), what it measures, and its training hooks.

The app's widgets, the CLI's options and the notebooks' parameters cells are all derived from the dials, so a
new study is one new file in this package.
"""
from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import param

from ..engine.group import SEED_DIALS
from ..engine.measure import Metric
from ..errors import ConfigError
from ..plugins import Choice, is_import_path

#: parameters of every Parameterized that are not dials
_NOT_DIALS = {"name"}


class Study(param.Parameterized):
    """Base class. Subclasses set `key`, `title`, `question`, `paper`, the record axis, the declared `metrics` and
    `headline`, their dials, and supply the training loop's hooks (setup, step, measure, ...; see
    docs/adding-a-study.md)."""

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    question: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    axis: ClassVar[str] = "epoch"  # the index of the records the run emits
    #: what a researcher should see on the page, in a sentence, and the reproduction claims (workbench.reproduce)
    #: that check it
    finding: ClassVar[str] = ""
    claims: ClassVar[tuple] = ()
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
    #: dials that act only on sampling from the trained models and on measuring them, never on training (a
    #: sampler, its steps, the float type of its draws): configs differing only in these (and otherwise alike,
    #: seeds included) train one model between them, which each samples its own way (engine.group.Group.training).
    #: They may differ within a group, as batchable dials do; the study's hooks read them per model.
    sampling: ClassVar[frozenset] = frozenset()
    #: dials that act only for some values of another: {dial: (the other dial, the values where it acts)}; the
    #: page greys a dial out where it does nothing (gce_q with loss='ce', momentum with Adam)
    applies: ClassVar[dict] = {}

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
        dials = {n: v for klass in reversed(cls.__mro__) for n, v in vars(klass).items()
                 if isinstance(v, param.Parameter)}  # cls.param is made after this hook
        strays = sorted(set(cls.sampling) - set(dials))
        if strays:
            raise TypeError(f"{where}: sampling names {', '.join(strays)}, which are not dials")
        for dial, (other, values) in cls.applies.items():
            if dial not in dials or other not in dials:
                raise TypeError(f"{where}: applies names {dial!r} / {other!r}, which are not both dials")
            objects = getattr(dials[other], "objects", None)
            bad = [v for v in values if objects is not None and v not in objects]
            if bad:
                raise TypeError(f"{where}: applies {dial!r} for {other}={bad!r}, which {other} cannot take")
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
    def inert(cls, values: dict) -> dict[str, str]:
        """The dials that do nothing for these values of the others: {dial: why}, e.g. {'gce_q': 'acts only with loss
        = gce'}."""
        out = {}
        for dial, (other, acts) in cls.applies.items():
            if other in values and values[other] not in acts:
                out[dial] = f"acts only with {other} = {' or '.join(map(str, acts))}"
        return out

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
        defaults, dials = cls.defaults(), cls.dials()
        out = {}
        for k, v in values.items():
            if k in defaults and k in dials:
                try:  # as the dial reads it: an empty box is the default None, "0.40" is 0.4
                    v_read = coerce(dials[k], k, v)
                except (ConfigError, ValueError, TypeError):
                    v_read = v
                if v_read == defaults[k]:
                    continue
            out[k] = v
        return out

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

    @classmethod
    def json_schema(cls) -> dict:
        """The dials as a JSON Schema (draft 2020-12), for editors, config files and other tools: each dial's type,
        bounds or choices, default and meaning; no other keys."""
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"workbench:{cls.key}",
                "title": f"{cls.key} dials", "description": f"{cls.title}. {cls.question}", "type": "object",
                "properties": {name: _dial_schema(par) for name, par in cls.dials().items()},
                "additionalProperties": False}

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
    def execute_group(cls, ctx, configs: list["Study"]) -> None:
        """Train K configs that differ only in `batchable` dials (and seeds), as one program: the training loop
        (engine/loop.py) with this study's hooks. Records go out through ctx.emit (each metric a (K,) array),
        kept arrays through ctx.put (a leading "model" dim). A study with a loop of its own overrides this."""
        from ..engine.group import Group
        from ..engine.loop import train

        train(cls, ctx, Group(configs, ctx.device))

    # the hooks of the training loop; `plan` is what setup returned (its `state` is the study's own)
    @classmethod
    def setup(cls, ctx, group):  # pragma: no cover - abstract
        """Build the group's models, data and optimiser; put what is known before training; return an
        engine.loop.Plan (how many axis units, the measurement cadence, the stacked net, the study's state)."""
        raise NotImplementedError(f"study {cls.key!r} has neither setup() nor its own execute_group()")

    @classmethod
    def batches(cls, plan, i: int):
        """The optimisation steps of axis unit i, one item each (handed to `step`): one step by default."""
        return (None,)

    @classmethod
    def step(cls, plan, batch, step: int):  # pragma: no cover - abstract
        """One optimisation step of every model; returns the per-model losses (K,)."""
        raise NotImplementedError

    @classmethod
    def measure(cls, plan, i: int, step: int) -> dict:  # pragma: no cover - abstract
        """The declared metrics at axis value i (after `step` optimisation steps), each a (K,) array."""
        raise NotImplementedError

    @classmethod
    def judge(cls, plan, rec: dict, step: int) -> None:
        """After a record is out: a study's own signs of divergence (plan.diverged.update)."""

    @classmethod
    def converged(cls, plan) -> bool:
        """After a measurement: whether every model is done (training stops early)."""
        return False

    @classmethod
    def finish(cls, plan) -> None:
        """After training: final analyses, arrays to keep."""

    def data_files(self) -> list[str]:
        """The files this config reads its data from: their contents' digests are part of the run id."""
        return []

    def data_contents(self) -> dict[str, str]:
        """{what: digest of its content} of data a config reads that is not a file (a user's torch Dataset, an image
        folder, a Hugging Face dataset, converted once): part of the run id as the data files' digests are."""
        return {}

    def user_code(self) -> dict[str, str]:
        """{dial: import path} of a user's own code this config runs (a model factory, a data set's loader): their
        sources are part of the run id."""
        return {n: v for n, p in self.dials().items() if isinstance(p, Choice) and is_import_path(v := getattr(self, n))}

    def model_bytes(self) -> int:
        """About how much memory one model of this config needs while training (sizes a sweep's tasks)."""
        return 64 << 20

    @classmethod
    def batchable_dials(cls) -> frozenset:
        """The study's batchable and sampling dials and the seeds: what may differ between models of a group."""
        return cls.batchable | cls.sampling | {"seed", *SEED_DIALS.values()}

    def training_key(self) -> str:
        """Configs with equal keys train the same model (they differ at most in `sampling` dials)."""
        sampling = type(self).sampling
        return json.dumps({k: v for k, v in self.config().items() if k not in sampling}, sort_keys=True)

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
                value = float(text) if "." in text or "e" in text.lower() else int(text)  # "8.0" is 8; "8.5" not
            elif isinstance(p, param.Number):
                value = float(text)
            elif isinstance(p, param.List):
                value = None if text in ("", "null", "None") else json.loads(text)
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(field, value, f"{describe(p)}") from None
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        value = value.item()  # numpy scalars (np.int64(8), a grid from np.arange) as the Python numbers they are
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
        if isinstance(p, Choice) and is_import_path(value):
            return value
        raise ConfigError(field, value, describe(p))
    return value


def _dial_schema(p: param.Parameter) -> dict:
    """One dial as a JSON Schema property."""
    out: dict = {"description": p.doc or ""}
    if isinstance(p, Choice):  # a built-in choice, or an import path to the user's own
        out["anyOf"] = [{"enum": [_plain(v) for v in p.objects]},
                        {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"}]
    elif isinstance(p, param.Selector):
        out["enum"] = [_plain(v) for v in p.objects]
    elif isinstance(p, param.Boolean):
        out["type"] = "boolean"
    elif isinstance(p, param.Number):
        out["type"] = "integer" if isinstance(p, param.Integer) else "number"
        lo, hi = p.bounds or (None, None)
        if lo is not None:
            out["minimum"] = lo
        if hi is not None:
            out["maximum"] = hi
    elif isinstance(p, param.List):
        out["type"] = "array"
    else:
        out["type"] = "string"
    if p.allow_None and "type" in out:
        out["type"] = [out["type"], "null"]
    out["default"] = _plain(p.default)
    return out


def describe(p: param.Parameter) -> str:
    """What values a dial allows, in words."""
    if isinstance(p, param.Boolean):
        return "true or false"
    if isinstance(p, Choice):
        return f"one of {', '.join(map(str, p.objects))}, or an import path module:function naming {p.what}"
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
