"""Hyperparameter search with Optuna over a study's dials, trials trained together.

`search_space` turns dials into Optuna distributions (bounds from the dials: a number dial's soft bounds where it
has them, on a log scale where they span decades; a selector's choices). `optimize` asks Optuna for a batch of
trials at a time; trials that differ only in the study's batchable dials (learning rate, flip rate, loss
parameters, seeds, ...) train as one stacked program, many trials on one device, as a sweep's cells do. Each
trial × seed is stored as the run `wb.run` would make of it (same id, same numbers), so a re-asked config is read
back, not trained again, and every trial is in the run browser.

    import optuna, workbench as wb
    study = wb.tune.optimize("label_noise", ["lr", "elr_lambda"], n_trials=32, loss="elr", epochs=30,
                             sampler=optuna.samplers.TPESampler(seed=0))
    study.best_params

Optuna is the optional `[tune]` extra.
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import param

from .engine import pick_device
from .errors import ConfigError, require
from .runs.identity import identity, make_id
from .runs.run import Run, now, record
from .runs.store import Store
from .runs.sweep import tasks, train_task
from .studies import get as get_study
from .studies.base import coerce

REDUCE = ("final", "best", "mean")


def require_optuna():
    return require("optuna", "tune", "tune")


def search_space(study: str, dials: Iterable[str] | dict) -> dict:
    """Optuna distributions for `dials` of `study`: a list of names (ranges from the dials), or a dict mapping a
    name to None (from the dial), a range of its own — a tuple (low, high) or (low, high, "log") — or a list of
    choices, each value checked as the dial checks it. A dial without finite bounds needs a range; seeds are not
    searched (pass `seeds` to optimize)."""
    optuna = require_optuna()
    D = optuna.distributions
    cls = get_study(study)
    all_dials = cls.dials()
    given = dials if isinstance(dials, dict) else {name: None for name in dials}
    if not given:
        raise ConfigError("space", given, f"at least one dial of {study!r} to search")
    out = {}
    for name, rng in given.items():
        if name not in all_dials:
            raise ConfigError("space", name, f"a dial of study {study!r}: {', '.join(sorted(all_dials))}")
        if name == "seed" or name.endswith("_seed"):
            raise ConfigError("space", name, "a dial other than a seed (give optimize seeds=[...]: every trial is "
                                             "trained on each)")
        p = all_dials[name]
        if isinstance(rng, list):  # choices
            if not rng:
                raise ConfigError("space", name, f"at least one value to choose from for {name!r}")
            out[name] = D.CategoricalDistribution([coerce(p, name, v) for v in rng])
            continue
        if rng is not None and not (isinstance(rng, tuple) and len(rng) in (2, 3)
                                    and (len(rng) == 2 or rng[2] in ("log", "linear"))):
            raise ConfigError("space", rng, f"for {name!r}: a tuple (low, high) or (low, high, 'log'), or a list of "
                                            "choices")
        if isinstance(p, param.Selector) and rng is None:
            out[name] = D.CategoricalDistribution(list(p.objects))
        elif isinstance(p, param.Boolean) and rng is None:
            out[name] = D.CategoricalDistribution([False, True])
        elif isinstance(p, param.Number):
            if rng is None:
                lo, hi = p.softbounds if p.softbounds is not None else (p.bounds or (None, None))
                log = None
            else:
                lo, hi, *rest = rng
                log = bool(rest and rest[0] == "log")
                lo, hi = coerce(p, name, lo), coerce(p, name, hi)
            if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
                raise ConfigError("space", name, f"a range (low, high) for dial {name!r}, which has no finite bounds "
                                                 f"to search between (bounds {p.bounds})")
            if log is None:
                log = lo > 0 and hi / lo >= 100  # a span of decades: searched on a log scale
            if isinstance(p, param.Integer):
                out[name] = D.IntDistribution(int(lo), int(hi), log=log)
            else:
                out[name] = D.FloatDistribution(float(lo), float(hi), log=log)
        else:
            raise ConfigError("space", name, f"a dial with bounds or choices, or a list of values for {name!r}")
    return out


def _value(series: np.ndarray, reduce: str, better: str) -> float:
    v = series.astype(float)
    if reduce == "final":
        return float(v[-1])
    if reduce == "mean":
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    finite = v[np.isfinite(v)]
    if not finite.size:
        return float("nan")
    return float(finite.max() if better == "max" else finite.min())


def optimize(study: str, space: Iterable[str] | dict, n_trials: int, *, metric: str | None = None,
             reduce: str = "final", seeds: Iterable[int] = (0,), batch: int = 8, sampler=None, optuna_study=None,
             store: Store | None = None, device: str | None = None, progress: bool = True, **dials):
    """Search `space` (see search_space) of `study` for the best `metric` (default: the headline; its declared
    direction), `reduce`d over the run's axis (final, best or mean) and averaged over `seeds`. Optuna proposes
    `batch` trials at a time; those that differ only in batchable dials train together. `dials` fix the other
    dials. Returns the Optuna study (its trials carry the run ids in user_attrs["runs"]); pass `optuna_study` to
    continue one (its direction must match; `sampler` is for a new study). A trial whose metric is not finite on
    some seed (a diverged or failed run) is told FAIL, with the runs' statuses in user_attrs["statuses"]."""
    optuna = require_optuna()
    cls = get_study(study)
    metric = metric or cls.headline
    if cls.metric(metric).per != "record":  # KeyError naming what the study declares, before any work
        raise ConfigError("metric", metric, f"a metric recorded along the run's {cls.axis} (not a per-run one)")
    better = cls.better(metric)
    if better == "none":
        raise ConfigError("metric", metric, "a metric with a direction (better = min or max)")
    if reduce not in REDUCE:
        raise ConfigError("reduce", reduce, f"one of {', '.join(REDUCE)}")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError("n_trials", n_trials, "an integer of at least 1")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError("batch", batch, "an integer of at least 1")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "at least one seed")
    dists = search_space(study, space)
    overlap = set(dists) & set(dials)
    if overlap:
        raise ConfigError("space", sorted(overlap), "dials either searched or fixed, not both")
    cls.configure(**dials)  # the fixed dials checked before any work
    direction = "maximize" if better == "max" else "minimize"
    if optuna_study is None:
        optuna_study = optuna.create_study(direction=direction, sampler=sampler, study_name=study)
    elif optuna_study.direction.name.lower() != direction:
        raise ConfigError("optuna_study", optuna_study.study_name, f"a study that should {direction} {metric}")
    store = store or Store()
    dev = pick_device(device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials, unit="trial", desc=f"tune {study}", dynamic_ncols=True)
    told = 0
    try:
        while told < n_trials:
            trials = [optuna_study.ask(dists) for _ in range(min(batch, n_trials - told))]
            runs = _train_trials(cls, trials, dials, seeds, store, dev)
            for trial, got in zip(trials, runs):
                if isinstance(got, str):  # a config the dials refuse: the trial failed, saying why
                    trial.set_user_attr("error", got)
                    optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                values = [_value(r.ds[metric].values, reduce, better) if metric in r.ds else float("nan")
                          for r in got]  # a run that failed before its first record has none
                trial.set_user_attr("runs", [r.id for r in got])
                trial.set_user_attr("statuses", [r.status for r in got])
                value = float(np.mean(values))
                if math.isfinite(value):
                    optuna_study.tell(trial, value)
                else:
                    optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
            told += len(trials)
            if bar is not None:
                bar.update(len(trials))
                done = [t for t in optuna_study.trials if t.value is not None]
                if done:
                    bar.set_postfix({metric: f"{optuna_study.best_value:.4g}"}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return optuna_study


def _train_trials(cls, trials, dials: dict, seeds: list[int], store: Store, dev) -> list:
    """Each trial's runs (one per seed), read from the store where a run of that config exists, the rest trained
    as stacked tasks (cells that share their shape-changing dials together) and stored as runs; a trial whose
    dials are refused gets the error's text instead."""
    out: list = []
    todo = []  # (trial index, config) for the cells not yet stored
    for i, trial in enumerate(trials):
        try:
            cfgs = [cls.configure(**dials, **trial.params, seed=s) for s in seeds]
        except ConfigError as e:
            out.append(str(e))
            continue
        out.append([None] * len(cfgs))
        for j, cfg in enumerate(cfgs):
            ident = identity(cfg)
            rid = make_id({"study": cls.key, "config": cfg.config()}, ident)
            meta = store.cached(rid)
            if meta:
                out[i][j] = Run(meta, store=store)
            else:
                todo.append((i, j, cfg, ident, rid))
    by_rid: dict[str, list] = {}
    for item in todo:  # the same config asked twice in one batch: trained once
        by_rid.setdefault(item[4], []).append(item)
    first = {id(items[0][2]): items for items in by_rid.values()}
    for chunk in tasks(cls, [items[0][2] for items in by_rid.values()], dev):
        created, t0 = now(), time.perf_counter()
        ds = train_task(cls.key, [c.config() for c in chunk], str(dev))
        for m, cfg in enumerate(chunk):
            items = first[id(cfg)]
            _, _, _, ident, rid = items[0]
            one = (ds.isel(model=m, drop=True) if "model" in ds.dims else ds).copy()
            one.attrs = {}
            step = int(one["diverged_step"]) if "diverged_step" in one else -1
            status = "failed" if ds.attrs.get("error") else ("diverged" if step >= 0 else "done")
            meta = record(rid, cls.key, "run", cfg.config(), ident, status, step if step >= 0 else None,
                          ds.attrs.get("error") or None, created, t0, ds.attrs.get("device", str(dev)), (), one)
            saved = Run(store.save(meta, one), ds=one, store=store)
            for i, j, *_ in items:
                out[i][j] = saved
    return out
