"""The reproduction report: each paper finding the studies cover, checked over seeds, with its effect size.

`check(key, profile)` trains the models and returns {passed, effect, effect_label, detail, seeds, figure}; the
notebooks in notebooks/reproduce/ (one per claim, `workbench notebook sync` writes them) call it; `workbench
reproduce [--profile quick|full]` runs them under papermill and writes data/reports/index.html. The quick profile is
small (two to eight seeds, short runs) and a whole run of it fits the test budget (15 minutes on two cores; 10.7
with --jobs 2): the long claims, whose quick settings take over 3 minutes on one core, are left out of it and shown
by their full-profile results (`--only` runs them at their quick settings). The full profile runs every claim with longer
runs and more seeds: about 2 hours on two cores with --jobs 2, but for `resolution_shift`, whose full settings are a
GPU job (`bench/estimate_resolution_shift.py` measures what they cost on a machine: about 67 hours on two cores).
"""
from __future__ import annotations

import html
import json
import math
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .stats import spread
from .errors import ConfigError

PROFILES = ("quick", "full")


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str
    claim: str  # what the paper reports, in a sentence of our own after its abstract (shared/PAPERS.md)
    test: str  # the setting used here and what is checked
    check: Callable[[dict], dict]  # settings -> {passed, values (the effect per seed), effect_label, detail, figure}
    quick: dict
    full: dict
    paper_number: str = ""  # the paper's own number for the effect, where its abstract gives one
    # Its quick settings take over 3 minutes on one core: a whole quick-profile run leaves it out, to stay within
    # the test budget (15 minutes on 2 cores); `--only` runs it at its quick settings, the full profile always.
    long: bool = False


def claims_to_run(profile: str, keys=None) -> list[str]:
    """The claims a run checks: `keys` when given (any claim, at either profile), else every claim at the full
    profile and every claim but the long ones at the quick profile."""
    if keys:
        return list(keys)
    return [k for k, c in CLAIMS.items() if profile != "quick" or not c.long]


def _sweep(study, grid, seeds, **dials):
    from .runs import sweep

    return sweep(study, grid=grid, seeds=seeds, progress=False, **dials).ds


def _fmt(x) -> str:
    return str(spread(x))


def _bars(rows, kdims, vdim: str, title: str, **opts):
    """A claim's bar chart: wide enough for its title, the legend beside the bars (grouped bars: one colour each)."""
    import holoviews as hv

    from .viz import plots  # noqa: F401 - loads HoloViews' Bokeh extension, which options need

    grouped = isinstance(kdims, list) and len(kdims) > 1
    return hv.Bars(rows, kdims, vdim).opts(title=title, width=780, height=360, show_grid=True,
                                          **(dict(multi_level=False, legend_position="right") if grouped else {}),
                                          **opts)


def _early_learning(s):
    from .viz.plots import curves_by

    ds = _sweep("label_noise", {"flip_rate": [0.0, 0.4]}, s["seeds"], dataset="digits", width=512, depth=2,
                lr=1e-3, batch_size=128, epochs=s["epochs"], loss="ce")
    acc = ds.test_acc
    drop = (acc.max("epoch") - acc.isel(epoch=-1))  # (flip_rate, seed)
    noisy, clean = drop.sel(flip_rate=0.4).values, drop.sel(flip_rate=0.0).values
    return dict(passed=bool((noisy > 0.05).all() and noisy.mean() > clean.mean() + 0.05), values=noisy,
                effect_label="test accuracy, peak − final, 40 % flips",
                detail=f"peak − final: 40 % flips {_fmt(noisy)}; no flips {_fmt(clean)}",
                figure=curves_by(ds, "test_acc", "flip_rate"))


def _sgd_temperature(s):
    from .viz.plots import phase_diagram

    ds = _sweep("sgd_noise", {"alpha": [0.1, 100.0], "temperature": [1e-4, 3e-3]}, s["seeds"], steps=s["steps"],
                eval_every=250)
    err = ds.test_err.isel(step=-1)
    effect = err.sel(temperature=3e-3) - err.sel(temperature=1e-4)
    feature, lazy = effect.sel(alpha=0.1).values, effect.sel(alpha=100.0).values
    return dict(passed=bool((feature > 0).all() and feature.mean() - lazy.mean() > 0.01), values=feature - lazy,
                effect_label="test-error change from T = 1e-4 to 3e-3, feature-learning minus lazy",
                detail=f"feature learning (α = 0.1) {_fmt(feature)}; lazy (α = 100) {_fmt(lazy)}",
                figure=phase_diagram(ds, "test_err", x="temperature", y="alpha"))


def _last_finite(a: np.ndarray) -> np.ndarray:
    """Each series' last finite value along the last axis (nan where it has none): a group of runs stops once every
    model in it converged, so the steps after a run's end are nan."""
    has = np.isfinite(a)
    idx = np.where(has, np.arange(a.shape[-1]), -1).max(-1)
    out = np.take_along_axis(a, np.maximum(idx, 0)[..., None], -1)[..., 0]
    return np.where(idx >= 0, out, np.nan)


def _rise_crossing(xs: np.ndarray, ys: np.ndarray, level: float) -> float:
    """Where a rising curve ys(xs) first reaches `level`, interpolated in log-log (nan if it never does)."""
    for i in range(1, len(xs)):
        if ys[i - 1] < level <= ys[i]:
            f = np.log(level / ys[i - 1]) / np.log(ys[i] / ys[i - 1])
            return float(np.exp(np.log(xs[i - 1]) + f * np.log(xs[i] / xs[i - 1])))
    return float("nan")


def _tc_power_law(s):
    """Sclocchi, Geiger & Wyart 2023: in the lazy regime (α = 100) the weight change at the end of training grows
    with T and with P; T_c, where it reaches the level `levels[0]`/α, falls with P as a power law."""
    import holoviews as hv

    from .viz.plots import PALETTE

    ds = _sweep("sgd_noise", {"n_train": s["sizes"], "temperature": s["temperatures"], "chi": [0.0, 1.0]},
                s["seeds"], task="perceptron", alpha=100.0, steps=s["steps"], eval_every=200)
    w = _last_finite(ds.weight_change.transpose("chi", "seed", "n_train", "temperature", "step").values)
    ts, ps = np.array(s["temperatures"], float), np.array(s["sizes"], float)
    exps, said, tcs = {}, [], {}
    for level in s["levels"]:
        for c, chi in enumerate((0.0, 1.0)):
            tc = np.array([[_rise_crossing(ts, w[c, k, j], level / 100.0) for j in range(len(ps))]
                           for k in range(len(s["seeds"]))])  # seeds × sizes
            slope = np.array([np.polyfit(np.log(ps[ok]), np.log(row[ok]), 1)[0] if ok.sum() >= 3 else np.nan
                              for row in tc for ok in [np.isfinite(row)]])
            exps[(level, chi)], tcs[(level, chi)] = slope, tc
            mean = [float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else np.nan for col in tc.T]
            said.append(f"level {level:g}/α, χ = {chi:g}: T_c at P = {', '.join(str(int(p)) for p in ps)} "
                        + " / ".join(f"{v:.3g}" for v in mean) + " (mean over the seeds where it is reached); "
                        f"exponent "
                        f"{_fmt(slope)}")
    main = np.stack([exps[(s["levels"][0], chi)] for chi in (0.0, 1.0)])  # χ × seeds
    plateau = w[:, :, :, 0].mean(1)  # χ × sizes: the weight change at the lowest T
    curves = [hv.Curve((ts, w[0, :, j].mean(0)), "temperature T", "|w − w0| / |w0| at the end (χ = 0)",
                       label=f"P = {int(p)}").opts(color=PALETTE[j % len(PALETTE)], line_width=2)
              for j, p in enumerate(ps)]
    level_line = hv.HLine(s["levels"][0] / 100.0).opts(color="gray", line_dash="dashed")
    left = hv.Overlay(curves + [level_line]).opts(logx=True, logy=True, width=390, height=340, show_grid=True,
                                                   legend_position="bottom_right", xticks=list(ts),
                                                   title="weight change against T (lazy, α = 100)")
    right = hv.Overlay([hv.Curve((ps, np.nanmean(tcs[(s["levels"][0], chi)], 0)), "training-set size P", "T_c",
                                 label=f"χ = {chi:g}").opts(color=PALETTE[i], line_width=2)
                        for i, chi in enumerate((0.0, 1.0))]).opts(
        logx=True, logy=True, width=390, height=340, show_grid=True, legend_position="top_right", xticks=list(ps),
        title=f"T_c (weight change reaches {s['levels'][0]:g}/α) against P")
    return dict(passed=bool((main < 0).all()), values=-main.mean(0),
                effect_label=f"−exponent a of T_c ∝ P^(−a), T_c where ‖w − w0‖/‖w0‖ reaches {s['levels'][0]:g}/α "
                             "(mean of χ = 0 and 1)",
                detail="teacher perceptron in 16 dimensions, 2 × 128 MLP, α = 100 (lazy), B = 16, trained to zero "
                       f"hinge loss ({s['steps']} steps at most), T = " + ", ".join(f"{t:g}" for t in ts)
                       + "; the final relative weight change of each run, T_c per seed and P where it crosses the "
                         "level (log-log interpolation), the exponent fitted per seed (reproduced if negative on "
                         "every seed at both χ, at the first level; the level is a choice — 2/α, twice the "
                         "change the lazy fit's output scale asks — so the others are shown). Weight change at the "
                         "lowest T (the T → 0 plateau) at each P: χ = 0 "
                       + " / ".join(f"{v:.4f}" for v in plateau[0]) + ", χ = 1 "
                       + " / ".join(f"{v:.4f}" for v in plateau[1]) + ". " + "; ".join(said),
                figure=(left + right))


def _edge_of_stability(s):
    from .viz.plots import curves_by

    ds = _sweep("edge_of_stability", {"lr": [0.2]}, s["seeds"], steps=s["steps"], sharpness_every=50,
                n_train=500)
    sharp = ds.sharpness.squeeze("lr").values  # (seed, measurement)
    late = np.nanmean(sharp[:, sharp.shape[1] // 2:], 1)
    gap = np.abs(late - 10) / 10
    return dict(passed=bool((gap < 0.2).all() and (sharp[:, 0] < 9).all()), values=late,
                effect_label="late sharpness (2/η = 10)",
                detail=f"sharpness at the start {_fmt(sharp[:, 0])}; over the second half {_fmt(late)}",
                figure=curves_by(ds, "sharpness", "lr"))


def _softmax_collapse(s):
    from .viz.plots import curves_by

    ds = _sweep("grokking", {"softmax_precision": ["float32", "float64"]}, s["seeds"], p=31, epochs=s["epochs"],
                eval_every=50)
    zero = ds.sc_fraction.max("epoch")
    f32, f64 = zero.sel(softmax_precision="float32").values, zero.sel(softmax_precision="float64").values
    return dict(passed=bool((f32 > 0.5).all() and (f64 < 0.5).all()), values=f32 - f64,
                effect_label="largest share of training examples at exactly zero loss, float32 − float64",
                detail=f"float32 {_fmt(f32)}; float64 {_fmt(f64)}",
                figure=curves_by(ds, "test_acc", "softmax_precision"))


def _fp8_training(s):
    from .viz.plots import curves_by

    ds = _sweep("precision", {"precision": ["fp32", "fp8_e4m3", "fp4_e2m1"]}, s["seeds"], scale="tensor", width=64,
                n_train=600, epochs=s["epochs"], eval_every=3)
    acc = ds.test_acc.isel(epoch=-1)
    gap = (acc.sel(precision="fp32") - acc.sel(precision="fp8_e4m3")).values
    fp4 = (acc.sel(precision="fp32") - acc.sel(precision="fp4_e2m1")).values
    return dict(passed=bool((np.abs(gap) < 0.05).all()), values=np.abs(gap),
                effect_label="absolute test-accuracy gap, fp32 − fp8 e4m3 (scaled per tensor)",
                detail=f"fp32 − fp8: {_fmt(gap)}; fp32 − fp4: {_fmt(fp4)}",
                figure=curves_by(ds, "test_acc", "precision"))


def _terminal_snr(s):
    from .viz.plots import curves_by

    kw = dict(dataset="bright_dark", schedule="scaled_linear", steps=s["steps"], eval_every=s["steps"],
              sample_steps=25, n_samples=s["n_samples"], clip_x0=1.0)
    flawed = _sweep("diffusion", {"prediction": ["epsilon"]}, s["seeds"], spacing="leading", **kw)
    fixed = _sweep("diffusion", {"prediction": ["v"]}, s["seeds"], spacing="trailing", zero_terminal_snr=True, **kw)
    data = float(fixed.data_brightness_std.isel(step=-1).mean())
    a = flawed.brightness_std.isel(step=-1).values.ravel()
    b = fixed.brightness_std.isel(step=-1).values.ravel()
    return dict(passed=bool((a < 0.95 * data).all() and (np.abs(b - data) < 0.05).all()), values=b - a,
                effect_label="brightness spread, fixed − flawed (data 0.70)",
                detail=f"data {data:.3f}; non-zero terminal SNR, ε, leading {_fmt(a)}; zero terminal SNR, v, "
                       f"trailing {_fmt(b)}",
                figure=curves_by(flawed, "brightness_std", "prediction"))


def _offset_noise(s):
    """Offset noise against the brightness collapse of Lin et al.'s flawed setting (ε, scaled-linear, leading
    spacing, non-zero terminal SNR): training noise with a per-image constant added."""
    from .viz.plots import curves_by

    ds = _sweep("diffusion", {"offset_noise": [0.0, *s["offsets"]]}, s["seeds"], dataset="bright_dark",
                schedule="scaled_linear", prediction="epsilon", spacing="leading", steps=s["steps"],
                eval_every=s["steps"], sample_steps=25, n_samples=s["n_samples"], clip_x0=1.0)
    spread = ds.brightness_std.isel(step=-1).transpose("offset_noise", "seed").values
    sw = ds.sw.isel(step=-1).transpose("offset_noise", "seed").values
    data = float(ds.data_brightness_std.isel(step=-1).mean())
    gain = spread[1:] - spread[0]  # (offset, seed)
    said = "; ".join(f"offset {o}: spread {_fmt(spread[i + 1])}, sliced W. {_fmt(sw[i + 1])}"
                     for i, o in enumerate(s["offsets"]))
    return dict(passed=bool((gain > 0).all()), values=gain[0],
                effect_label=f"brightness spread with offset noise {s['offsets'][0]} minus without (data "
                             f"{data:.2f})",
                detail=f"bright/dark digits (per-image brightness ±0.7: the data's spread {data:.3f}), ε-prediction, "
                       f"scaled-linear schedule with its non-zero terminal SNR, leading spacing, DDIM 25 steps, "
                       f"{s['steps']} training steps. Without offset noise: spread {_fmt(spread[0])}, sliced W. "
                       f"{_fmt(sw[0])}; {said}. Reproduced if offset noise widens the spread on every seed and "
                       "offset.",
                figure=curves_by(ds, "brightness_std", "offset_noise"))


def _one_more_step(s):
    """Hu et al. 2024: One More Step beside a frozen model in Lin et al.'s flawed setting (ε, scaled-linear, leading
    spacing, non-zero terminal SNR): each sample asked for a held-out image's brightness, the small net's x̂_0 from
    pure noise taken one DDIM step onto the first sampling time; against the plain samples (which cannot be asked)."""
    import holoviews as hv

    from .viz.plots import PALETTE

    ds = _sweep("diffusion", {"one_more_step": [True]}, s["seeds"], dataset="bright_dark", schedule="scaled_linear",
                prediction="epsilon", spacing="leading", steps=s["steps"], eval_every=s["steps"], sample_steps=25,
                n_samples=s["n_samples"], clip_x0=1.0).isel(step=-1, one_more_step=0)
    plain, oms = ds.brightness_error.values, ds.oms_brightness_error.values
    spread, spread_oms = ds.brightness_std.values, ds.oms_brightness_std.values
    data = ds.data_brightness_std.values
    gain = plain - oms
    closer = np.abs(spread_oms - data) < np.abs(spread - data)
    x = ds.brightness.values
    hist = (hv.Curve((x, ds.brightness_hist_data.mean("seed").values), "mean brightness", "density", label="data")
            .opts(color="gray", line_dash="dashed") *
            hv.Curve((x, ds.brightness_hist.mean("seed").values), "mean brightness", "density",
                     label="frozen model from pure noise").opts(color=PALETTE[0]) *
            hv.Curve((x, ds.brightness_hist_oms.mean("seed").values), "mean brightness", "density",
                     label="with One More Step").opts(color=PALETTE[2])).opts(
        title="Per-image brightness (mean over seeds)", width=780, height=340, show_grid=True,
        legend_position="top")
    rows = [(name, float(v.mean())) for name, v in (("plain samples", plain), ("One More Step", oms))]
    bars = _bars(rows, "samples", "mean |brightness − brightness asked for|",
                 "One More Step: samples against the brightness asked for (lower is closer)")
    return dict(passed=bool((gain > 0).all() and closer.all()), values=gain,
                effect_label="mean distance from the brightness asked for, plain samples minus One More Step",
                detail=f"bright/dark digits (the data's brightness spread {float(data.mean()):.3f}), ε-prediction, "
                       f"scaled-linear schedule with its non-zero terminal SNR, leading spacing, DDIM 25 steps, "
                       f"{s['steps']} training steps, then the denoiser frozen and One More Step's net (two hidden "
                       f"layers of 64) trained 1,000 steps beside it; {s['n_samples']} samples, each asked for a "
                       f"held-out image's brightness. Distance to the brightness asked for: plain {_fmt(plain)}, "
                       f"One More Step {_fmt(oms)}; brightness spread: plain {_fmt(spread)}, One More Step "
                       f"{_fmt(spread_oms)}; sliced W. to held-out data: plain {_fmt(ds.sw.values)}, One More Step "
                       f"{_fmt(ds.oms_sw.values)}. Reproduced if, on every seed, One More Step's samples lie closer "
                       "to the brightness asked for and their spread closer to the data's.",
                figure=(hist + bars).cols(1))


def _points_2d(s, **dials) -> dict:
    """A diffusion claim's dials on eight Gaussians: its training steps (measured once, at the end), samples and
    sampling steps, and any others."""
    return dict(dataset="eight_gaussians", steps=s["steps"], eval_every=s["steps"], n_samples=s["n_samples"],
                sample_steps=s["sample_steps"], **dials)


#: Lin et al.'s three fixes as dial values, and their flawed counterparts
_TSNR_FIXES = {"zero terminal SNR": ("zero_terminal_snr", True, False), "v-prediction": ("prediction", "v", "epsilon"),
               "trailing spacing": ("spacing", "trailing", "leading")}


def _terminal_snr_fixes(s):
    kw = dict(dataset="bright_dark", schedule="scaled_linear", steps=s["steps"], eval_every=s["steps"],
              sample_steps=25, n_samples=s["n_samples"], clip_x0=1.0)

    def spread(**fixes):
        dials = {dial: (good if fixes.get(name, True) else bad) for name, (dial, good, bad) in _TSNR_FIXES.items()}
        first = next(iter(dials))  # a sweep needs one grid dial
        ds = _sweep("diffusion", {first: [dials.pop(first)]}, s["seeds"], **dials, **kw)
        return ds.brightness_std.isel(step=-1).values.ravel(), float(ds.data_brightness_std.isel(step=-1).mean())

    full, data = spread()
    none, _ = spread(**{name: False for name in _TSNR_FIXES})
    without = {name: spread(**{name: False})[0] for name in _TSNR_FIXES}
    short = {name: np.where(np.isfinite(v), data - v, np.inf) for name, v in without.items()}  # NaN: diverged
    restored = (np.abs(full - data) < 0.05).all()
    each_needed = all((np.abs(v) >= 0.05).all() for v in short.values())
    rows = [("all three fixes", float(np.nanmean(full))), ("none", float(np.nanmean(none)))] + \
        [(f"without {name}", float(np.nanmean(v))) for name, v in without.items()] + [("data", data)]
    bars = _bars(rows, "setting", "brightness spread of the samples",
                 "Terminal SNR, fix by fix: Lin et al.'s three fixes together and each left out (bright/dark digits)")
    return dict(passed=bool(restored and each_needed), values=np.min(np.abs(np.stack(list(short.values()))), axis=0),
                effect_label=f"brightness spread still missing with one fix left out (the smallest; data "
                             f"{data:.2f})",
                detail=f"bright/dark digits, scaled-linear schedule, {s['steps']} steps, DDIM 25 steps, x̂₀ clipped to "
                       "±1; reproduced if the three fixes together bring the spread within 0.05 of the data's and "
                       "leaving out any one of them leaves it 0.05 or more away (or diverges) on every seed. Data "
                       f"{data:.3f}; all three {_fmt(full)}; none {_fmt(none)}; "
                       + "; ".join(f"without {name} {_fmt(v)}" for name, v in without.items()), figure=bars)


def _ambient(s):
    kw = _points_2d(s, corruption_sigma=1.0)
    ratio, beats_noisy, rows, said = [], True, [], []
    for n in s["sizes"]:
        def final(clean_fraction, **d):
            ds = _sweep("diffusion", {"clean_fraction": [clean_fraction]}, s["seeds"], **{**kw, **d})
            return ds.sw.isel(step=-1).values.ravel()

        noisy = final(0.0, n_train=n, ambient=False)  # everything noisy, trained on as if clean
        mixed = final(0.1, n_train=n, ambient=True)  # 10 % clean + 90 % noisy through the ambient loss
        share = final(1.0, n_train=max(16, n // 10))  # the clean 10 % alone
        clean = final(1.0, n_train=n)  # as many clean points
        ratio.append(mixed / clean)
        beats_noisy &= bool((mixed < noisy).all())
        rows += [(f"n = {n}", name, float(v.mean())) for name, v in
                 (("noisy alone", noisy), ("10 % clean alone", share), ("10 % clean + 90 % noisy", mixed),
                  ("all clean", clean))]
        said.append(f"n = {n}: noisy alone {_fmt(noisy)}, the clean 10 % alone {_fmt(share)}, 10 % clean + 90 % "
                    f"noisy (ambient loss) {_fmt(mixed)}, all clean {_fmt(clean)}")
    ratio = np.array(ratio)  # sizes × seeds
    bars = _bars(rows, ["data set", "training data"], "sliced Wasserstein to held-out data (lower is better)",
                 "Ambient diffusion: 10 % clean + 90 % noisy (σ = 1) against clean and noisy data alone")
    return dict(passed=bool(beats_noisy and (ratio <= 1.1).all()), values=ratio.mean(0),
                effect_label="sliced Wasserstein, 10 % clean + 90 % noisy (ambient) / all clean, mean over sizes",
                detail=f"eight Gaussians, 90 % of the points carrying Gaussian noise of σ = 1, {s['steps']} steps, "
                       "sliced Wasserstein to held-out clean data (lower is better); reproduced if the mix beats "
                       "the noisy data alone and comes within 10 % of all-clean data of the same size, at every "
                       "size and seed. " + "; ".join(said), figure=bars)


def _data_dials(data: str, n_samples: int) -> dict:
    """The diffusion dials a claim run on both kinds of data sets: images from 2,000 training digits, at most 1,000
    samples (held-out images are few); 2-D points as asked."""
    from . import datasets

    if data in datasets.IMAGES:
        return dict(n_train=2000, n_samples=min(1000, n_samples))
    return dict(n_samples=n_samples)


def _immiscible(s):
    import torch

    from . import datasets
    from .engine import diffusion as dif
    from .viz.plots import curves_by

    ratios = []
    for seed in s["seeds"]:
        g = torch.Generator().manual_seed(seed)
        x0 = datasets.points("eight_gaussians", 256, g)
        eps = torch.randn(x0.shape, generator=g)
        ratios.append(float((x0 - dif.immiscible(x0, eps)).norm(dim=1).mean() / (x0 - eps).norm(dim=1).mean()))
    r = np.array(ratios)
    drops, said, shown = [], [], None
    for data in ("eight_gaussians", "digits_images"):
        dials = _data_dials(data, s["n_samples"])
        dials["sample_steps"] = s["sample_steps"]
        ds = _sweep("diffusion", {"immiscible": [False, True]}, s["seeds"], dataset=data, steps=s["steps"],
                    eval_every=s["steps"] // 4, **dials)
        sw = ds.sw.where(ds.step > 0, drop=True)  # the checkpoints after step 0 (where both are the same init)
        on, off = sw.sel(immiscible=True), sw.sel(immiscible=False)
        ratio = np.exp(np.log(on / off).mean("step")).values  # per seed: geometric mean over the checkpoints
        drops.append(1 - ratio)
        said.append(f"{data}: sliced W. at steps {', '.join(str(int(v)) for v in sw.step.values)} — independent "
                    + " / ".join(f"{float(v):.3f}" for v in off.mean("seed").values) + "; immiscible "
                    + " / ".join(f"{float(v):.3f}" for v in on.mean("seed").values)
                    + f"; ratio (geometric mean over checkpoints) {_fmt(ratio)}; steps to the independent run's "
                      f"final quality {_fmt(_steps_to_reach(on, off.isel(step=-1)))} of {s['steps']}")
        shown = ds if shown is None else shown
    drops = np.array(drops)  # data sets × seeds
    return dict(passed=bool((drops > 0).all() and (r < 0.9).all()), values=drops.mean(0),
                effect_label="relative drop of the sliced Wasserstein distance at equal steps, immiscible vs "
                             "independent noise (mean of 2-D and images)",
                detail=f"noise-to-data distance in a batch of 256, paired / independent {_fmt(r)}. Sample quality "
                       "against held-out data at four checkpoints, the same steps on and off (reproduced if lower "
                       "with immiscible noise on both data sets and every seed): " + "; ".join(said),
                figure=curves_by(shown, "sw", "immiscible"))


def _laplace_schedule(s):
    """Hang et al. 2024: training noise levels drawn from a Laplace distribution in logSNR (μ = 0, scale b) against
    the cosine schedule's own, sampling unchanged (the cosine schedule, DDIM), sample quality at equal steps."""
    from .viz.plots import curves_by

    drops, said, shown = {}, [], None
    for b in s["scales"]:
        per_data = []
        for data in ("eight_gaussians", "digits_images"):
            dials = _data_dials(data, s["n_samples"])
            ds = _sweep("diffusion", {"train_schedule": ["same", "laplace"]}, s["seeds"], dataset=data,
                        schedule="shifted_cosine", train_schedule_params=f"mu=0, b={b:g}", steps=s["steps"],
                        eval_every=s["steps"] // 4, sample_steps=s["sample_steps"], **dials)
            sw = ds.sw.where(ds.step > 0, drop=True)  # the checkpoints after step 0 (the same init on both)
            lap, cos = sw.sel(train_schedule="laplace"), sw.sel(train_schedule="same")
            ratio = np.exp(np.log(lap / cos).mean("step")).values  # per seed: geometric mean over checkpoints
            per_data.append(1 - ratio)
            said.append(f"b = {b:g}, {data}: sliced W. at steps {', '.join(str(int(v)) for v in sw.step.values)} — "
                        "cosine " + " / ".join(f"{float(v):.3f}" for v in cos.mean("seed").values) + "; Laplace "
                        + " / ".join(f"{float(v):.3f}" for v in lap.mean("seed").values)
                        + f"; Laplace / cosine (geometric mean over checkpoints) {_fmt(ratio)}")
            shown = ds if shown is None else shown
        drops[b] = np.array(per_data)  # data sets × seeds
    paper = drops[s["scales"][0]]
    return dict(passed=bool((paper > 0).all()), values=paper.mean(0),
                effect_label=f"relative drop of the sliced Wasserstein distance at equal steps, Laplace (μ = 0, "
                             f"b = {s['scales'][0]:g}) vs cosine training levels (mean of 2-D and images)",
                detail="The continuous cosine schedule samples (DDIM); training draws its noise levels either from "
                       "that schedule or from a Laplace distribution in logSNR, the denoiser told the cosine time "
                       f"of each level (the train_schedule dial), {s['steps']} steps, sample quality at four "
                       "checkpoints (reproduced if lower with the paper's Laplace on both data sets and every "
                       "seed): " + "; ".join(said),
                figure=curves_by(shown, "sw", "train_schedule"))


def _inference_scaling(s):
    """Ma et al. 2025: search over initial noise under a verifier. Eight Gaussians, whose true log-density is the
    verifier; each kept sample the best of M candidates."""
    from .viz.plots import PALETTE

    import holoviews as hv

    ds = _sweep("diffusion", {"best_of": [s["best_of"]]}, s["seeds"], dataset="eight_gaussians", steps=s["steps"],
                eval_every=s["steps"], n_samples=s["n_samples"], sample_steps=s["sample_steps"])
    ms = [int(v) for v in ds["candidates"].values]
    score_v = ds.best_of_log_density.squeeze("best_of").transpose("seed", "candidates").values
    sw_v = ds.best_of_sw.squeeze("best_of").transpose("seed", "candidates").values
    drop = 1 - sw_v[:, -1] / sw_v[:, 0]  # per seed: the distance at the largest M against M = 1
    best_m = [ms[int(i)] for i in np.nanargmin(sw_v, 1)]
    mean_sw, mean_score = np.nanmean(sw_v, 0), np.nanmean(score_v, 0)
    figure = (hv.Curve((ms, mean_score), "candidates per sample (M)", "verifier: mean log-density",
                       label="verifier score").opts(color=PALETTE[2], logx=True, width=380, height=320, xticks=ms,
                                                    title="verifier score (mean of seeds)", show_grid=True)
              + hv.Curve((ms, mean_sw), "candidates per sample (M)", "sliced Wasserstein to held-out data",
                         label="distance").opts(color=PALETTE[1], logx=True, width=380, height=320, xticks=ms,
                                                title="distance to the data (mean of seeds)", show_grid=True))
    return dict(passed=bool((drop > 0).all() and (score_v[:, -1] > score_v[:, 0]).all()), values=drop,
                effect_label=f"relative drop of the sliced Wasserstein distance, best of {ms[-1]} initial noises "
                             "against one",
                detail=f"eight Gaussians, {s['steps']} training steps, DDIM {s['sample_steps']} steps, 500 kept "
                       f"samples per seed; the verifier is the data's true log-density. M = "
                       + ", ".join(str(m) for m in ms) + ": verifier score " + " / ".join(f"{v:.2f}" for v in
                                                                                      mean_score)
                       + "; sliced W. " + " / ".join(f"{v:.3f}" for v in mean_sw)
                       + f" (means over seeds). Lowest distance at M = {', '.join(map(str, best_m))} (per seed); "
                       f"largest M against one: drop {_fmt(drop)}, verifier gain "
                       f"{_fmt(score_v[:, -1] - score_v[:, 0])}. Reproduced if the kept samples are closer to the "
                       "data at the largest M than with one candidate, and score higher, on every seed.",
                figure=figure)


def _negative_transfer(s):
    """Go et al. 2023 (O1, O2): the trained denoiser's loss gradients in ten bins of t; their cosine against the
    bins' logSNR gap."""
    import holoviews as hv
    from scipy.stats import spearmanr

    from .viz import plots  # noqa: F401 - loads HoloViews' Bokeh extension, which options need

    rho, said, curves = [], [], []
    for data in ("eight_gaussians", "digits_images"):
        dials = _data_dials(data, s["n_samples"])
        ds = _sweep("diffusion", {"dataset": [data]}, s["seeds"], steps=s["steps"], eval_every=s["steps"],
                    sample_steps=s["sample_steps"], **dials)
        cos = ds.grad_cosine.squeeze("dataset").transpose("seed", "t_bin", "t_bin_other").values
        lam = ds.logsnr_by_t_bin.squeeze("dataset").transpose("seed", "t_bin").values
        i, j = np.triu_indices(cos.shape[1], 1)
        r = np.array([spearmanr(np.abs(lam[k, i] - lam[k, j]), cos[k, i, j])[0] for k in range(len(cos))])
        neg = (cos[:, i, j] < 0).mean(1)
        rho.append(r)
        gaps = np.abs(lam[:, i] - lam[:, j]).mean(0)
        order = np.argsort(gaps)
        curves.append(hv.Scatter((gaps[order], cos[:, i, j].mean(0)[order]), "logSNR gap between the bins",
                                 "gradient cosine", label=data))
        said.append(f"{data}: Spearman ρ(gap, cosine) {_fmt(r)}; cosine between neighbouring bins "
                    f"{_fmt(np.mean([cos[:, a, a + 1] for a in range(cos.shape[1] - 1)], 0))}, between the two "
                    f"ends {_fmt(cos[:, 0, -1])}; share of bin pairs whose gradients conflict (cosine < 0) "
                    f"{_fmt(neg)}")
    rho = np.array(rho)  # data sets × seeds
    figure = hv.Overlay([c.opts(size=6, alpha=0.8) for c in curves]).opts(
        title="gradient cosine between two noise-level bins against their logSNR gap (mean over seeds)", width=780,
        height=360, show_grid=True, legend_position="right")
    return dict(passed=bool((rho < 0).all()), values=-rho.mean(0),
                effect_label="−Spearman ρ between two bins' logSNR gap and their loss gradients' cosine (mean of "
                             "2-D and images)",
                detail=f"the trained denoiser ({s['steps']} steps) after training; its loss gradient in each of ten "
                       "bins of t (2,048 training examples, the same examples and noise in every bin), the cosine "
                       "between every two bins (reproduced if it falls with the gap on both data sets and every "
                       "seed): " + "; ".join(said), figure=figure)


def _steps_to_reach(curve, target) -> np.ndarray:
    """Per seed: the first training step at which `curve` (step × seed) is at or below `target` (per seed),
    linearly interpolated between checkpoints; nan where it never gets there."""
    steps = curve.step.values.astype(float)
    out = []
    for m in range(curve.sizes["seed"]):
        y, goal = curve.isel(seed=m).values, float(target.isel(seed=m))
        hit = np.nonzero(y <= goal)[0]
        if not len(hit):
            out.append(np.nan)
        elif hit[0] == 0:
            out.append(steps[0])
        else:
            i = hit[0]
            out.append(steps[i - 1] + (steps[i] - steps[i - 1]) * (y[i - 1] - goal) / (y[i - 1] - y[i]))
    return np.array(out)


def _sampling_noise(s):
    """Albergo, Boffi & Vanden-Eijnden 2023 (stochastic interpolants): one trained model, sampled by the family of
    processes with the same marginals — DDIM's η from the probability-flow ODE (0) to ancestral sampling (1) — at
    several numbers of steps."""
    import holoviews as hv

    from .viz.plots import PALETTE

    etas, steps = s["etas"], s["step_counts"]
    ds = _sweep("diffusion", {"eta": etas, "sample_steps": steps}, s["seeds"], dataset="eight_gaussians",
                sampler="ddim", steps=s["steps"], eval_every=s["steps"], n_samples=s["n_samples"])
    sw = ds.sw.isel(step=-1).transpose("eta", "sample_steps", "seed").values
    ode, noisy = sw[0], sw[1:]  # (steps, seed), (eta > 0, steps, seed)
    best_noisy = noisy.min(0)
    many_helps = (best_noisy[-1] < ode[-1]).all()
    figure = hv.Overlay([hv.Curve((steps, sw[i].mean(1)), "sampling steps", "sliced Wasserstein to held-out data",
                                  label=f"η = {e:g}").opts(color=PALETTE[i % len(PALETTE)], logx=True,
                                                            xticks=[(n, str(n)) for n in steps])
                         for i, e in enumerate(etas)]).opts(
        logy=True, width=780, height=360, show_grid=True, legend_position="right", padding=0.05,
        title="one trained denoiser sampled with more or less noise (DDIM η; mean of seeds)")
    said = "; ".join(f"{n} steps: " + ", ".join(f"η {e:g} {_fmt(sw[i, j])}" for i, e in enumerate(etas))
                     for j, n in enumerate(steps))
    return dict(passed=bool(many_helps), values=1 - best_noisy[-1] / ode[-1],
                effect_label=f"relative drop of the sliced Wasserstein distance at {steps[-1]} steps, the best η > 0 "
                             "against the ODE (η = 0)",
                detail=f"eight Gaussians, {s['steps']} training steps (ε-prediction, linear schedule); every run "
                       f"trains the same model (same seed) and samples {s['n_samples']} points with DDIM at η = "
                       f"{', '.join(f'{e:g}' for e in etas)}. {said}. Reproduced if, at the most steps, some η > 0 "
                       "samples closer to the data than the ODE on every seed (the noise corrects errors of the "
                       "learned score; with few steps the added noise is itself an error).",
                figure=figure)


_NC_SAMPLERS = ("ddpm", "ddim", "heun")


def _noise_conditioning(s):
    # one sweep: the denoisers with and without t are trained once per seed and sampled by each sampler
    ds = _sweep("diffusion", {"sampler": list(_NC_SAMPLERS), "time_conditioning": [True, False]}, s["seeds"],
                **_points_2d(s))
    ratio, rows, said = {}, [], []
    for sampler in _NC_SAMPLERS:
        sw = ds.sw.isel(step=-1).sel(sampler=sampler)
        on, off = sw.sel(time_conditioning=True).values.ravel(), sw.sel(time_conditioning=False).values.ravel()
        ratio[sampler] = off / on
        rows += [(sampler, "with t", float(on.mean())), (sampler, "without t", float(off.mean()))]
        said.append(f"{sampler}: with t {_fmt(on)}, without {_fmt(off)}, ratio {_fmt(off / on)}")
    graceful = [k for k, v in ratio.items() if (v < 1.5).all()]
    bars = _bars(rows, ["sampler", "denoiser"], "sliced Wasserstein to held-out data (lower is better)",
                 "Noise conditioning: the denoiser with and without the time input, per sampler")
    return dict(passed=len(graceful) >= 2, values=np.median(np.stack(list(ratio.values())), axis=0),
                effect_label="sliced W. without / with noise conditioning (median over DDPM, DDIM, Heun)",
                detail=f"eight Gaussians, ε-prediction, linear schedule, {s['steps']} steps, {s['sample_steps']} "
                       "sampling steps; degrading gracefully = less than 1.5× the conditioned model's distance on "
                       f"every seed, reproduced if most samplers do (here: {', '.join(graceful) or 'none'}). "
                       + "; ".join(said), figure=bars)


def _label_noise_diffusion(s):
    """Na et al. 2024: a class-conditional denoiser trained on flipped classes, with the plain loss and with the
    transition-aware one (TDSM); the share of samples that land in the class asked for."""
    import holoviews as hv

    from .viz.plots import PALETTE

    rates = s["flips"]
    ds = _sweep("diffusion", {"condition_loss": ["plain", "transition"], "condition_flip": rates}, s["seeds"],
                conditional=True, **_points_2d(s))
    acc = ds.condition_accuracy.isel(step=-1).transpose("condition_loss", "condition_flip", "seed")
    sw = ds.sw.isel(step=-1).transpose("condition_loss", "condition_flip", "seed")
    plain, robust = acc.sel(condition_loss="plain").values, acc.sel(condition_loss="transition").values
    gain = robust - plain  # (rate, seed)
    rows = [(f"{r:.0%} flipped", loss, float(acc.sel(condition_loss=loss, condition_flip=r).mean()))
            for r in rates for loss in ("plain", "transition")]
    bars = _bars(rows, ["flips", "loss"], "share of samples in the class asked for",
                 "Label-noise robust diffusion: samples in the class asked for, plain against transition-aware loss",
                 ylim=(0, 1.05))
    top = float(max(rates))
    pts = ds.samples.isel(seed=0).sel(condition_flip=top)
    asked = ds.sample_class.isel(seed=0).sel(condition_flip=top, condition_loss="plain").values

    def scatter(loss):
        xy = pts.sel(condition_loss=loss).values
        return hv.Scatter((xy[:, 0], xy[:, 1], asked), "x₁", ["x₂", "class asked for"]).opts(
            color="class asked for", cmap=PALETTE[:8], size=3, alpha=0.6, width=380, height=360, colorbar=True,
            title=f"{loss} loss, {top:.0%} flipped (seed {s['seeds'][0]})", show_grid=True)

    said = "; ".join(f"{r:.0%} flipped: plain {_fmt(plain[i])}, transition-aware {_fmt(robust[i])}, sliced W. "
                     f"{_fmt(sw.sel(condition_loss='plain').values[i])} / "
                     f"{_fmt(sw.sel(condition_loss='transition').values[i])}" for i, r in enumerate(rates))
    return dict(passed=bool((gain > 0).all()), values=gain[-1],
                effect_label=f"share of samples in the class asked for, transition-aware minus plain loss, "
                             f"{top:.0%} of the classes flipped",
                detail=f"eight Gaussians, each its class; {s['steps']} training steps, DDIM {s['sample_steps']} "
                       f"steps, {s['n_samples']} samples asked for the eight classes in turn, each sample's class by "
                       f"a 5-NN vote among held-out points (its accuracy on held-out data: "
                       f"{_fmt(ds.condition_accuracy_data.isel(step=-1, condition_loss=0, condition_flip=0).values)}"
                       "). Symmetric flips to "
                       f"the other classes; the transition-aware loss knows the flip rate and learns p(class | x_t) "
                       f"beside the denoiser. {said}. Reproduced if the transition-aware loss puts more samples in "
                       "the class asked for at every flip rate and seed.",
                figure=(bars + scatter("plain") + scatter("transition")).cols(1))


def _geometry_adaptive(s):
    """Kadkhodaie et al. 2024: two denoisers trained on disjoint halves of the digits, sampled from the same initial
    noise (DDIM, deterministic): how far apart their samples are, against the distance to their own nearest
    training image, as the halves grow."""
    import holoviews as hv
    import torch

    from .viz.plots import PALETTE, image_grid

    sizes = s["sizes"]
    ds = _sweep("diffusion", {"n_train": sizes, "data_split": ["half_a", "half_b"]}, s["seeds"],
                dataset="digits_images", steps=s["steps"], eval_every=s["steps"], n_samples=s["n_samples"],
                sample_steps=s["sample_steps"])
    pair, unrelated, near = (np.full((len(sizes), len(s["seeds"])), np.nan) for _ in range(3))
    for i, n in enumerate(sizes):
        for j in range(len(s["seeds"])):
            a = torch.as_tensor(ds.samples.sel(n_train=n, data_split="half_a").isel(seed=j).values)
            b = torch.as_tensor(ds.samples.sel(n_train=n, data_split="half_b").isel(seed=j).values)
            pair[i, j] = float((a - b).norm(dim=1).median())  # the same initial noise through the two models
            unrelated[i, j] = float((a - b.roll(1, 0)).norm(dim=1).median())  # different initial noises
            near[i, j] = float(np.median(ds.nearest_train.sel(n_train=n).isel(seed=j).values))  # both halves
    falls = pair[-1] < pair[0]
    general = pair[-1] < near[-1]  # closer to the other half's model than to any of its own training images
    memorizes = pair[0] > near[0]
    ticks = dict(logx=True, xticks=[(n, str(n)) for n in sizes], padding=0.05)
    curves = hv.Overlay([
        hv.Curve((sizes, pair.mean(1)), "training images per half", "median distance",
                 label="half A's sample to half B's, same noise").opts(color=PALETTE[0], **ticks),
        hv.Curve((sizes, near.mean(1)), "training images per half", "median distance",
                 label="a sample to its nearest own training image").opts(color=PALETTE[1], **ticks),
        hv.Curve((sizes, unrelated.mean(1)), "training images per half", "median distance",
                 label="half A's sample to half B's, other noise").opts(color="gray", line_dash="dashed",
                                                                         **ticks)]).opts(
        title="two denoisers on disjoint halves: distance between their samples (mean of "
                                       "seeds)", width=780, height=360, show_grid=True, legend_position="bottom")
    rows = np.concatenate([ds.samples.sel(n_train=n, data_split=h).isel(seed=0).values[:8]
                           for n in (sizes[0], sizes[-1]) for h in ("half_a", "half_b")])
    grid = image_grid(rows, 8)
    pictures = hv.Image(np.flipud(grid), bounds=(0, 0, grid.shape[1], grid.shape[0])).opts(
        cmap="gray", clim=(-1, 1), xaxis=None, yaxis=None, width=780, height=40 + 730 * grid.shape[0] // grid.shape[1],
        title=f"8 initial noises (seed {s['seeds'][0]}); rows: half A, half B at {sizes[0]} per half, then at "
              f"{sizes[-1]}")
    said = "; ".join(f"{n} per half: pair {_fmt(pair[i])}, nearest own training image {_fmt(near[i])}, other "
                     f"noise {_fmt(unrelated[i])}" for i, n in enumerate(sizes))
    return dict(passed=bool(falls.all() and general.all() and memorizes.all()),
                values=pair[0] / unrelated[0] - pair[-1] / unrelated[-1],
                effect_label=f"distance between the two halves' samples from the same noise, relative to other "
                             f"noise, at {sizes[0]} minus at {sizes[-1]} images per half",
                detail=f"8×8 digits, two MLP denoisers (other initial weights) on disjoint halves of the training "
                       f"digits, {s['steps']} steps, DDIM {s['sample_steps']} steps (deterministic) from the same "
                       f"{s['n_samples']} initial noises; medians of per-sample distances. {said}. Reproduced if, "
                       "on every seed, the distance between the two models' samples falls from the smallest to the "
                       "largest halves, at the largest halves is below the distance to their own nearest training "
                       "image (the same density learned) and at the smallest above it (each half memorized).",
                figure=(curves + pictures).cols(1))


def _resolution_shift(s):
    """Chen 2023: the best input scale b (the data scaled by b before noise: smaller is noisier at every step) at
    each image resolution; the same digits upsampled, a convolutional denoiser."""
    import holoviews as hv

    from .viz.plots import PALETTE

    sides, scales = s["sides"], s["scales"]
    sw = []
    for side in sides:
        ds = _sweep("diffusion", {"input_scale": scales}, s["seeds"], dataset="digits_images", resolution=side,
                    denoiser="conv", width=s["width"], depth=s["depth"], batch_size=s["batch_size"],
                    schedule="sigmoid", steps=s["steps"],
                    eval_every=s["steps"], n_train=s["n_train"], n_samples=s["n_samples"],
                    sample_steps=s["sample_steps"])
        sw.append(ds.sw.isel(step=-1).transpose("input_scale", "seed").values)
    sw = np.array(sw)  # (side, scale, seed)
    best = np.array(scales)[np.nanargmin(np.where(np.isfinite(sw), sw, np.inf), axis=1)]  # (side, seed)
    best_mean = [scales[int(np.nanargmin(sw[i].mean(1)))] for i in range(len(sides))]
    shifts = np.log2(best[0] / best[-1])  # per seed: octaves the best b moves down from the smallest to the largest
    rel = sw / np.nanmin(sw.mean(2), axis=1)[:, None, None]  # each resolution's distances over its best mean
    figure = hv.Overlay([hv.Curve((scales, rel[i].mean(1)), "input scale b (smaller: noisier)",
                                  "sliced W. / the resolution's best", label=f"{side}×{side}")
                         .opts(color=PALETTE[i % len(PALETTE)], logx=True, xticks=[(b, f"{b:g}") for b in scales])
                         for i, side in enumerate(sides)]).opts(
        width=780, height=360, show_grid=True, legend_position="right", padding=0.05,
        title="sample quality against the input scale b (mean of seeds; 1 = the resolution's best)")
    said = "; ".join(f"{side}×{side}: " + ", ".join(f"b {b:g} {_fmt(sw[i, j])}" for j, b in enumerate(scales))
                     + f" (best b {best_mean[i]:g})" for i, side in enumerate(sides))
    monotone = all(best_mean[i + 1] <= best_mean[i] for i in range(len(sides) - 1))
    return dict(passed=bool(monotone and best_mean[-1] < best_mean[0]), values=shifts,
                effect_label=f"octaves by which the best input scale b falls from {sides[0]}×{sides[0]} to "
                             f"{sides[-1]}×{sides[-1]} (per seed)",
                detail=f"8×8 digits upsampled bilinearly to each side, {s['n_train']:,} training images, a "
                       f"convolutional "
                       f"denoiser ({s['width']} channels, {s['depth']} blocks), sigmoid schedule with Chen's input "
                       f"scale b, {s['steps']} steps of {s['batch_size']} images, DDIM {s['sample_steps']} steps, sliced Wasserstein to "
                       f"held-out images (compared within a resolution). {said}. Reproduced if the best b (mean over "
                       f"seeds) never grows with the resolution and is smaller at {sides[-1]}×{sides[-1]} than at "
                       f"{sides[0]}×{sides[0]}.",
                figure=figure)


def _relay_snr(s):
    import torch

    from . import datasets
    from .probes.spectra import radial_power_spectrum

    sides, sigma, shared = s["sides"], s["sigma"], min(s["sides"]) // 2  # frequencies every resolution holds
    per_seed, rows = [], []
    for seed in s["seeds"]:
        snr = {}
        for side in sides:
            g = torch.Generator().manual_seed(seed)  # the same digits at every side
            x = datasets.images("digits_images", s["images"], g, side=side).reshape(-1, side, side)
            noise = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(10_000 + seed))
            _, p_signal = radial_power_spectrum(x)
            _, p_noise = radial_power_spectrum(noise)
            snr[side] = p_signal[:shared + 1] / p_noise[:shared + 1]  # per cycles-per-image 0 .. shared
        per_seed.append(snr)
    rise = np.array([[np.all(snr[b] > snr[a]) for a, b in zip(sides, sides[1:])] for snr in per_seed])
    lo, hi = sides[0], sides[-1]
    gain = np.array([np.log10(snr[hi][1] / snr[lo][1]) for snr in per_seed])
    for side in sides:
        mean = np.mean([snr[side] for snr in per_seed], axis=0)
        rows += [(f"{k} cycle{'' if k == 1 else 's'}", f"{side}×{side}", float(np.log10(v)))
                 for k, v in enumerate(mean)]
    bars = _bars(rows, ["frequency (cycles per image)", "resolution"], "log10 SNR",
                 f"Per-frequency SNR of digits under the same pixel noise (σ = {sigma}) at growing resolution")
    said = "; ".join(f"{side}×{side}: " + ", ".join(f"{v:.3g}" for v in np.mean([p[side] for p in per_seed], axis=0))
                     for side in sides)
    return dict(passed=bool(rise.all()), values=gain,
                effect_label=f"log10 SNR gain at 1 cycle per image, {hi}×{hi} over {lo}×{lo}",
                detail=f"{s['images']} digits bilinearly upsampled to {', '.join(map(str, sides))} pixels a side, "
                       f"white pixel noise of σ = {sigma}; radially averaged power (orthonormal FFT) of the images "
                       f"over that of the noise at 0 … {shared} cycles per image (the frequencies every resolution "
                       "holds); reproduced if the SNR rises with resolution at every one of them on every seed. "
                       f"Gain at 1 cycle (log10, {hi} over {lo}) {_fmt(gain)}. Mean SNR per frequency — {said}",
                figure=bars)


def _gumbel_precision(s):
    import torch

    from .probes import categorical as cat

    gap, n_tail, n = s["gap"], s["n_tail"], s["draws"]
    exact = {u: cat.tail_share_exact(gap, n_tail, u) for u in ("float32", "float64")}
    share = {"float32": [], "float64": []}
    for seed in s["seeds"]:
        for u in share:
            g = torch.Generator().manual_seed(seed * 2 + (u == "float64"))
            share[u].append(cat.tail_draws(gap, n_tail, n, u, g) / n)
    share = {u: np.array(v) for u, v in share.items()}
    # each sampler's measured share within 4 standard errors of its exact expectation: the draws are what they claim
    agree = all((np.abs(share[u] - exact[u]) < 4 * cat.standard_error(exact[u], n)).all() for u in share)
    temps = {u: np.array([cat.effective_temperature(p, gap, n_tail) for p in share[u]]) for u in share}
    rows = [(u, kind, 1e3 * v) for u in share for kind, v in
            (("exact expectation", exact[u]), (f"{n:,} draws (mean over seeds)", float(share[u].mean())))]
    rows.append(("softmax", "exact expectation", 1e3 * cat.tail_share_exact(gap, n_tail, None)))
    bars = _bars(rows, ["uniforms", "measure"], "tail share (‰)",
                 f"Gumbel-max sampling: the share of draws from {n_tail:,} tokens {gap:g} nats below the leader")
    drop = 1 - share["float32"] / share["float64"]
    return dict(passed=bool(agree and (share["float32"] < share["float64"]).all()), values=drop,
                effect_label=f"relative drop of the tail share, float32 against float64 uniforms (gap {gap:g})",
                detail=f"one token at logit 0 and {n_tail:,} at −{gap:g} (softmax gives the tail "
                       f"{1e3 * exact['float64']:.4f} ‰), {n:,} Gumbel-max draws per seed and float type (the best "
                       "tail uniform drawn by inverting its law on torch.rand's grid, see "
                       "workbench/probes/categorical.py). Tail share in ‰: float32 uniforms "
                       f"{_fmt(1e3 * share['float32'])} (exact expectation {1e3 * exact['float32']:.4f}), float64 "
                       f"{_fmt(1e3 * share['float64'])} (exact {1e3 * exact['float64']:.4f}); draws within 4 standard "
                       f"errors of their expectations: {agree}. Effective temperature: float32 "
                       f"{_fmt(temps['float32'])}, float64 {_fmt(temps['float64'])}", figure=bars)


def _mdm_sampling_precision(s):
    """Zheng et al. 2024 in a trained model: the masked diffusion study's samples from the same models with the
    ancestral sampler's Gumbel-max in float64, float32 and float16 (a positive control: its Gumbel noise is cut off
    near 7.6); the entropy of each pixel's level, the tail share and the independent-pixel judge's NLL."""
    types = ["float64", "float32", "float16"]
    ds = _sweep("masked_diffusion", {"uniforms": types}, s["seeds"], steps=s["steps"], eval_every=s["steps"],
                n_samples=s["n_samples"], sample_steps=s["sample_steps"], width=s["width"]).isel(step=-1)
    ent = {u: ds.sample_entropy.sel(uniforms=u).values.ravel() for u in types}
    tail = {u: ds.tail_share.sel(uniforms=u).values.ravel() for u in types}
    judge = {u: ds.judge_nll.sel(uniforms=u).values.ravel() for u in types}
    sw = {u: ds.sw.sel(uniforms=u).values.ravel() for u in types}
    data = ds.data_entropy.isel(uniforms=0).values.ravel()
    drop, drop16 = ent["float64"] - ent["float32"], ent["float64"] - ent["float16"]
    rows = [(u, float(ent[u].mean())) for u in types] + [("held-out images", float(data.mean()))]
    bars = _bars(rows, "samples", "entropy of a pixel's level (nats, mean over pixels)",
                 f"Masked diffusion: the samples' diversity by the sampler's float type ({s['sample_steps']} steps)")
    return dict(passed=bool(spread(drop).lo > 0), values=drop,
                effect_label=f"entropy per pixel of the samples, float64 − float32 Gumbel-max "
                             f"({s['sample_steps']} sampling steps)",
                detail=f"8×8 digits at 16 grey levels, the masked diffusion study's MLP ({s['steps']} training "
                       f"steps), {s['n_samples']} samples from the ancestral sampler in {s['sample_steps']} steps, the "
                       "same models sampled with each float type. Entropy per pixel (nats): float64 "
                       f"{_fmt(ent['float64'])}, float32 {_fmt(ent['float32'])}, float16 {_fmt(ent['float16'])}, "
                       f"held-out images {_fmt(data)}; float64 − float16 {_fmt(drop16)}. Tail share (‰ of pixels): "
                       f"float64 {_fmt(1e3 * tail['float64'])}, float32 {_fmt(1e3 * tail['float32'])}, float16 "
                       f"{_fmt(1e3 * tail['float16'])}. "
                       f"Judge NLL per pixel (lower: more typical): float64 {_fmt(judge['float64'])}, float32 "
                       f"{_fmt(judge['float32'])}, float16 {_fmt(judge['float16'])}. Sliced W. to held-out images: "
                       f"float64 {_fmt(sw['float64'])}, float32 {_fmt(sw['float32'])}, float16 {_fmt(sw['float16'])}. "
                       "Reproduced if float32 lowers the entropy against float64 (the 95 % interval of the "
                       "per-seed difference above 0).", figure=bars)


def _ptq_calibration(s):
    kw = _points_2d(s, sample_precision=s["format"])
    ds = _sweep("diffusion", {"calibration": ["all", "single"]}, s["seeds"], **kw)
    end = ds.isel(step=-1)
    drift = {c: end.sw_quantized_vs_fp32.sel(calibration=c).values.ravel() for c in ("all", "single")}
    quality = {c: end.sw_quantized.sel(calibration=c).values.ravel() for c in ("all", "single")}
    fp32 = end.sw.sel(calibration="all").values.ravel()  # the full-precision samples of the same models
    bars = _bars([(c, "low precision vs fp32 samples", float(np.nanmean(drift[c]))) for c in drift]
                 + [(c, "low precision vs held-out data", float(np.nanmean(quality[c]))) for c in quality]
                 + [("fp32", "fp32 vs held-out data", float(fp32.mean()))],
                 ["calibration", "distance"], "sliced Wasserstein",
                 f"Post-training {s['format']} quantization: activation ranges from every sampling time or one")
    passed = bool((drift["all"] < drift["single"]).all() and (quality["all"] <= 1.1 * fp32).all())
    return dict(passed=passed, values=1 - drift["all"] / drift["single"],
                effect_label=f"relative drop of the {s['format']} samples' distance to the fp32 samples, "
                             "calibrated at every sampling time vs at t = 0.5",
                detail=f"eight Gaussians, {s['steps']} training steps, DDIM {s['sample_steps']} steps, weights and "
                       f"layer inputs rounded to {s['format']} with static ranges from 512 noisy held-out points; "
                       "reproduced if calibrating at every sampling time brings the samples closer to the fp32 "
                       "ones than one calibration at t = 0.5 on every seed, and keeps their quality within 10 % of "
                       f"fp32's. Distance to the fp32 samples: every time {_fmt(drift['all'])}, one time "
                       f"{_fmt(drift['single'])}; to held-out data: every time {_fmt(quality['all'])}, one time "
                       f"{_fmt(quality['single'])}, fp32 {_fmt(fp32)}", figure=bars)


def _fp_vs_int_diffusion(s):
    kw = _points_2d(s)
    pairs = [tuple(p) for p in s["pairs"]]  # (fp format, int format) of equal bits
    ds = _sweep("diffusion", {"sample_precision": [f for p in pairs for f in p]}, s["seeds"], **kw)
    end = ds.isel(step=-1)
    q = {f: end.sw_quantized.sel(sample_precision=f).values.ravel() for p in pairs for f in p}
    fp32 = end.sw.isel(sample_precision=0).values.ravel()
    (w_fp, a_fp), (w_int, a_int) = s["mixed"]  # weights and layer inputs apart: W4A8 in each family, and crossed
    mixed = _sweep("diffusion", {"sample_precision": [w_fp, w_int], "sample_act_precision": [a_fp, a_int]},
                   s["seeds"], **kw).sw_quantized.isel(step=-1)
    m = {(w, a): mixed.sel(sample_precision=w, sample_act_precision=a).values.ravel()
         for w in (w_fp, w_int) for a in (a_fp, a_int)}
    worse = lambda v: np.nan_to_num(v, nan=np.inf)  # noqa: E731 - a diverged sampling counts as the worst
    ok = all((worse(q[fp]) < worse(q[i])).all() for fp, i in pairs) \
        and (worse(m[w_fp, a_fp]) < worse(m[w_int, a_int])).all()
    low_fp, low_int = pairs[-1]
    name = lambda w, a: f"W {w} / A {a}"  # noqa: E731
    bars = _bars([(f, float(np.nanmean(v))) for f, v in q.items()]
                 + [(name(w, a), float(np.nanmean(v))) for (w, a), v in m.items()] + [("fp32", float(fp32.mean()))],
                 "format", "sliced W. to held-out data (lower: better)",
                 "Post-training quantization of a denoiser: floating point against integer at equal bits",
                 xrotation=30)
    return dict(passed=bool(ok), values=1 - q[low_fp] / q[low_int],
                effect_label=f"relative drop of the sliced Wasserstein distance, {low_int} → {low_fp}",
                detail=f"eight Gaussians, {s['steps']} training steps, DDIM {s['sample_steps']} steps, weights and "
                       "layer inputs rounded (static ranges calibrated at every sampling time); reproduced if the "
                       "floating-point format samples closer to the data than the integer one of the same bits "
                       "on every seed, at each width, and so do floating-point weights and layer inputs at "
                       f"W{w_fp[2]}A{a_fp[2]} ({w_fp} / {a_fp} against {w_int} / {a_int}). fp32 " + _fmt(fp32) + "; "
                       + "; ".join(f"{f} {_fmt(q[f])}" for p in pairs for f in p) + "; "
                       + "; ".join(f"{name(w, a)} {_fmt(v)}" for (w, a), v in m.items()), figure=bars)


def _elr(s):
    from .viz.plots import curves_by

    kw = dict(dataset="digits", width=512, depth=2, lr=1e-3, batch_size=128, epochs=s["epochs"], flip_rate=0.4)
    gains, ok, said, shown = [], True, [], None
    for kind in ("symmetric", "pair"):
        ds = _sweep("label_noise", {"loss": ["ce", "elr"]}, s["seeds"], noise_kind=kind, **kw)
        final, mem = ds.test_acc.isel(epoch=-1), ds.memorized.isel(epoch=-1)
        gain = (final.sel(loss="elr") - final.sel(loss="ce")).values
        m_elr, m_ce = mem.sel(loss="elr").values, mem.sel(loss="ce").values
        ok &= bool((gain > 0).all() and gain.mean() > 0.05 and (m_elr < m_ce / 2).all())
        gains.append(gain)
        said.append(f"{kind}: final accuracy ELR − CE {_fmt(gain)}; flipped labels fit: CE {_fmt(m_ce)}, "
                    f"ELR {_fmt(m_elr)}")
        shown = ds if shown is None else shown  # the symmetric flips' curves
    return dict(passed=ok, values=gains[0], effect_label="final test accuracy, ELR − CE, 40 % symmetric flips",
                detail="; ".join(said), figure=curves_by(shown, "test_acc", "loss"))


def _perp_grad(s):
    from .viz.plots import curves_by

    ds = _sweep("grokking", {"optimizer": ["adamw", "perp_adamw"]}, s["seeds"], p=53, epochs=s["epochs"],
                eval_every=25)
    plain, perp = ds.sel(optimizer="adamw"), ds.sel(optimizer="perp_adamw")
    a, b = plain.test_acc.isel(epoch=-1).values, perp.test_acc.isel(epoch=-1).values
    return dict(passed=bool((b > 0.9).all() and (a < 0.1).all()), values=b - a,
                effect_label="final test accuracy, ⊥AdamW − AdamW, no weight decay",
                detail=f"p = 53, {s['epochs']} full-batch epochs: AdamW {_fmt(a)}; ⊥AdamW {_fmt(b)}; epoch of "
                       f"grokking with ⊥AdamW {_fmt(perp.grok_epoch.values)}",
                figure=curves_by(ds, "test_acc", "optimizer"))


def _stablemax(s):
    from .viz.plots import curves_by

    # where float32 softmax collapses within the budget (the softmax_collapse claim's test setting): AdamW, no decay
    ds = _sweep("grokking", {"loss": ["ce", "stablemax"]}, s["seeds"], p=31, lr=0.03, epochs=s["epochs"],
                eval_every=50)
    soft, stable = ds.sel(loss="ce"), ds.sel(loss="stablemax")
    sc_soft, sc_stable = (d.sc_fraction.max("epoch").values for d in (soft, stable))
    acc_soft, acc_stable = (d.test_acc.isel(epoch=-1).values for d in (soft, stable))
    norm_soft, norm_stable = (d.logit_norm.isel(epoch=-1).values for d in (soft, stable))
    return dict(passed=bool((sc_stable == 0).all() and (sc_soft > 0.5).all() and (acc_stable > 0.9).all()),
                values=acc_stable - acc_soft,
                effect_label="final test accuracy, StableMax − softmax (float32, no weight decay)",
                detail=f"p = 31, lr 0.03, {s['epochs']} epochs: largest share of exactly-zero losses: softmax "
                       f"{_fmt(sc_soft)}, StableMax {_fmt(sc_stable)}; final test accuracy: softmax {_fmt(acc_soft)}, "
                       f"StableMax {_fmt(acc_stable)}; final logit norm: softmax {_fmt(norm_soft)}, StableMax "
                       f"{_fmt(norm_stable)}", figure=curves_by(ds, "sc_fraction", "loss"))


def _noisyquant(s):
    import torch

    from .probes import qerror

    gelu, student = [], []
    for seed in s["seeds"]:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(64, 256, generator=g) / 16
        x = qerror.sample("gelu", (s["rows"], 256), g)
        gelu.append(qerror.layer_error(x, w, "int6", 0.5, g) / qerror.layer_error(x, w, "int6", 0.0))
        t = torch.from_numpy(np.random.default_rng(seed).standard_t(2.0, (s["rows"], 256))).float()  # as drawn
        student.append(qerror.layer_error(t, w, "int6", 0.5, g) / qerror.layer_error(t, w, "int6", 0.0))
    gelu, student = np.array(gelu), np.array(student)
    bars = _bars([("GELU activations", float(gelu.mean())), ("Student-t (2 dof)", float(student.mean()))],
                 "tensor", "output error, noisy bias / plain", "NoisyQuant, int6, layer form")
    return dict(passed=bool((gelu < 0.97).all()), values=1 - gelu,
                effect_label="relative drop of a linear layer's output error, int6 activations",
                detail=f"error ratio with / without the noisy bias: post-GELU activations {_fmt(gelu)}; Student-t "
                       f"(2 dof) {_fmt(student)} (no gain: not every heavy tail)", figure=bars)


def _fp8_stability(s):
    from .viz.plots import phase_diagram

    lrs = s["lrs"]
    ds = _sweep("precision", {"precision": ["fp32", "bf16", "fp8_e4m3", "fp8_e5m2"], "lr": lrs}, s["seeds"],
                scale="none", width=64, n_train=600, epochs=s["epochs"], eval_every=1)
    frac = ds.diverged.mean("seed")  # (precision, lr): the share of seeds that diverged
    band = {f: int((frac.sel(precision=f) == 0).sum()) for f in frac.precision.values}
    per_seed = ds.diverged.sum("lr")  # (precision, seed): learning rates that diverged
    values = (per_seed.sel(precision="fp8_e4m3") - per_seed.sel(precision="fp32")).values
    said = "; ".join(f"{f}: " + ", ".join(f"{float(frac.sel(precision=f, lr=lr)):.0%}" for lr in lrs)
                     for f in frac.precision.values)
    return dict(passed=bool(band["fp8_e4m3"] < band["fp32"] and band["fp8_e4m3"] < band["bf16"]), values=values,
                effect_label="learning rates diverged per seed, fp8 e4m3 − fp32 (unscaled)",
                detail=f"share of seeds diverged (n={len(s['seeds'])}) at lr {', '.join(f'{lr:g}' for lr in lrs)} — "
                       f"{said}; stable "
                       f"band (learning rates where no seed diverged): "
                       + ", ".join(f"{f} {n}/{len(lrs)}" for f, n in band.items()),
                figure=phase_diagram(ds, "diverged", x="lr", y="precision"))


def _double_descent(s):
    from .viz.plots import curves_by

    grid = {"width": s["widths"], "flip_rate": [0.0, 0.2]}
    ds = _sweep("label_noise", grid, s["seeds"], preset="double_descent", epochs=s["epochs"])
    err = 1 - ds.test_acc.isel(epoch=-1)  # (width, flip_rate, seed)
    lo, mid, hi = s["widths"]
    noisy, clean = err.sel(flip_rate=0.2), err.sel(flip_rate=0.0)
    rise = (noisy.sel(width=mid) - noisy.sel(width=lo)).values
    fall = (noisy.sel(width=mid) - noisy.sel(width=hi)).values
    bump = (clean.sel(width=mid) - clean.sel(width=lo)).values
    return dict(passed=bool(rise.mean() > 0.03 and fall.mean() > 0.03 and bump.mean() < 0.01), values=rise,
                effect_label=f"test-error rise from width {lo} to {mid}, 20 % flips",
                detail=f"20 % flips: error at widths {lo}/{mid}/{hi} = " + " / ".join(
                    _fmt(noisy.sel(width=w).values) for w in s["widths"]) + f"; without flips, width {lo} to {mid}: "
                    f"{_fmt(bump)}; memorized at width {mid}: "
                    f"{_fmt(ds.memorized.isel(epoch=-1).sel(flip_rate=0.2, width=mid).values)}",
                figure=curves_by(ds.sel(width=mid), "test_acc", "flip_rate"))


_NOISY_DIGITS = dict(dataset="digits", width=512, depth=2, lr=1e-3, batch_size=128, flip_rate=0.4)  # 40 % flips


def _small_loss(s):
    import xarray as xr

    from .viz.plots import curves_by

    from .studies import get as get_study

    warmup = get_study("label_noise").param.selection_warmup.default  # epochs on all samples before selecting
    kw = dict(_NOISY_DIGITS, epochs=s["epochs"])
    base = _sweep("label_noise", {"selection": ["all", "adaptive_k", "oracle"]}, s["seeds"], **kw)
    fixed = _sweep("label_noise", {"keep_fraction": s["keeps"]}, s["seeds"], selection="fixed_k", **kw)
    final = {k: base.test_acc.isel(epoch=-1).sel(selection=k).values for k in ("all", "adaptive_k", "oracle")}
    for keep in s["keeps"]:
        final[f"fixed_k {keep:.0%}"] = fixed.test_acc.isel(epoch=-1).sel(keep_fraction=keep).values
    ada, every = final["adaptive_k"], final["all"]
    fixed_names = [f"fixed_k {keep:.0%}" for keep in s["keeps"]]
    best_fixed = max(fixed_names, key=lambda n: final[n].mean())
    kept = base.selected_flipped.isel(epoch=-1).sel(selection="adaptive_k").values
    curves = xr.concat([base.test_acc, fixed.test_acc.rename(keep_fraction="selection").assign_coords(
        selection=fixed_names)], "selection").to_dataset()
    curves.attrs = base.attrs
    passed = (ada > every).all() and all(ada.mean() > final[n].mean() for n in fixed_names)
    return dict(passed=bool(passed), values=ada - every,
                effect_label="final test accuracy, Adaptive-k − all samples, 40 % flips",
                detail=f"final test accuracy, 40 % symmetric flips, {s['epochs']} epochs (selection after "
                       f"{warmup} epochs on all samples): " + "; ".join(
                           f"{n} {_fmt(v)}" for n, v in final.items())
                       + f"; the best fixed k ({best_fixed}) − Adaptive-k {_fmt(final[best_fixed] - ada)}; oracle − "
                       f"Adaptive-k {_fmt(final['oracle'] - ada)}; flipped share of what Adaptive-k keeps at the end "
                       f"{_fmt(kept)} (of the data: 40 %); fixed_k 60 % is k from the true noise rate",
                figure=curves_by(curves, "test_acc", "selection"))


def _dropout(s):
    from .viz.plots import curves_by

    ds = _sweep("label_noise", {"dropout": s["rates"]}, s["seeds"], **dict(_NOISY_DIGITS, epochs=s["epochs"]))
    final, mem = ds.test_acc.isel(epoch=-1), ds.memorized.isel(epoch=-1)
    none_acc, none_mem = final.sel(dropout=0.0).values, mem.sel(dropout=0.0).values
    rates = [r for r in s["rates"] if r > 0]
    passed = all(((final.sel(dropout=r).values > none_acc).all() and (mem.sel(dropout=r).values < none_mem).all())
                 for r in rates)
    top = s["rate"]
    return dict(passed=bool(passed), values=final.sel(dropout=top).values - none_acc,
                effect_label=f"final test accuracy, dropout {top:g} − none, 40 % flips",
                detail=f"40 % symmetric flips, {s['epochs']} epochs, MLP 512 × 2: final test accuracy / flipped labels "
                       "fit — " + "; ".join(f"dropout {r:g}: {_fmt(final.sel(dropout=r).values)} / "
                                            f"{_fmt(mem.sel(dropout=r).values)}" for r in s["rates"]),
                figure=curves_by(ds, "test_acc", "dropout"))


def _pretrain_noise(s):
    """Chen et al. 2024 (noisy model learning): pre-train an MLP on digits with a share of its labels flipped,
    freeze it, and fit a linear probe on its last hidden features, in domain (clean test digits) and out of domain
    (the same digits moved a few pixels)."""
    import holoviews as hv

    from .viz.plots import PALETTE

    rates = s["rates"]
    ds = _sweep("label_noise", {"flip_rate": rates}, s["seeds"], epochs=s["epochs"], eval_every=s["epochs"],
                loss_snapshots=0, linear_probe=True, probe_shift=s["shift"])
    iid = ds.probe_acc.transpose("flip_rate", "seed").values
    ood = ds.probe_acc_shifted.transpose("flip_rate", "seed").values
    slight = [i for i, r in enumerate(rates) if 0 < r <= 0.1]
    best_slight = max(slight, key=lambda i: iid[i].mean())
    id_helps = iid[best_slight].mean() >= iid[0].mean()
    ood_hurt = all(ood[i].mean() < ood[0].mean() for i in range(1, len(rates))) and (ood[-1] < ood[0]).all()
    figure = hv.Overlay([
        hv.Curve((rates, iid.mean(1)), "flipped share of the pre-training labels", "linear-probe accuracy",
                 label="in domain: clean test digits").opts(color=PALETTE[0]),
        hv.Curve((rates, ood.mean(1)), "flipped share of the pre-training labels", "linear-probe accuracy",
                 label=f"out of domain: digits moved {s['shift']} pixels").opts(color=PALETTE[1])]
        + [hv.Scatter((np.repeat(rates, iid.shape[1]), v.ravel()), "flipped share of the pre-training labels",
                      "linear-probe accuracy").opts(color=c, size=5, alpha=0.5)
           for v, c in ((iid, PALETTE[0]), (ood, PALETTE[1]))]).opts(
        title="label noise in pre-training: a linear probe on the frozen features (line: mean, dots: seeds)",
        width=780, height=380, show_grid=True, legend_position="right", xlim=(-0.02, max(rates) + 0.02))
    said = "; ".join(f"{r:.0%}: in domain {_fmt(iid[i])}, out of domain {_fmt(ood[i])}" for i, r in enumerate(rates))
    return dict(passed=bool(id_helps and ood_hurt), values=ood[0] - ood[-1],
                effect_label=f"out-of-domain linear-probe accuracy, clean pre-training minus {rates[-1]:.0%} flips",
                detail=f"digits, MLP 512 × 2 pre-trained {s['epochs']} epochs (Adam 1e-3) on 1,200 digits with a "
                       f"share of symmetric flips; frozen; a logistic-regression probe on the last hidden features "
                       f"fitted on half of the ~600 clean test digits and scored on the other half, in domain and "
                       f"with every test digit moved {s['shift']} pixels up, down, left or right. {said}. "
                       f"Reproduced if slight noise (≤ 10 %) does not lower the in-domain probe (mean of seeds; here "
                       f"{'it does not' if id_helps else 'it does'}) and every flip rate lowers the out-of-domain "
                       f"probe (mean of seeds, and the largest rate on every seed; here "
                       f"{'it does' if ood_hurt else 'it does not'}).",
                figure=figure)


def _lottery_noise(s):
    """Arora et al. 2023: iterative magnitude pruning (rewinding to the initial weights) from MLPs of several widths
    on digits with flipped labels; at each round's end the test accuracy, test ECE and the weights kept."""
    import holoviews as hv

    from .viz.plots import PALETTE

    widths, e = s["widths"], s["epochs"]
    ds = _sweep("label_noise", {"width": widths}, s["seeds"], dataset="digits", depth=1, flip_rate=s["flip_rate"],
                epochs=e, eval_every=e, prune_rounds=s["rounds"], prune_fraction=s["fraction"], loss_snapshots=0)
    ends = ds.sel(epoch=[e * (r + 1) for r in range(s["rounds"] + 1)])  # each round's end
    acc = ends.test_acc.transpose("width", "seed", "epoch").values
    ece = ends.ece.transpose("width", "seed", "epoch").values
    weights = np.array([w * (64 + 10) for w in widths])  # a one-hidden-layer MLP on 8×8 digits, 10 classes
    kept = ends.density.transpose("width", "seed", "epoch").values * weights[:, None, None]
    best = np.nanargmax(np.where(np.isfinite(acc), acc, -np.inf), axis=2)  # (width, seed): the best round
    pick = lambda a: np.take_along_axis(a, best[..., None], 2)[..., 0]  # noqa: E731
    best_size, best_ece, dense_ece = pick(kept), pick(ece), ece[..., 0]
    start_spread = weights.max() / weights.min()
    size_spread = best_size.max(0) / best_size.min(0)  # per seed: largest best size over smallest
    calibrated = (best_ece < dense_ece).all()
    curves = []
    for i, w in enumerate(widths):
        x = kept[i].mean(0)
        curves.append(hv.Curve((x, acc[i].mean(0)), "weights kept", "test accuracy", label=f"width {w}")
                      .opts(color=PALETTE[i % len(PALETTE)]))
    fig_acc = hv.Overlay(curves).opts(logx=True, width=780, height=340, show_grid=True, legend_position="right",
                                      title=f"IMP with {s['flip_rate']:.0%} flipped labels: test accuracy against "
                                            "the weights kept (mean of seeds)")
    fig_ece = hv.Overlay([hv.Curve((kept[i].mean(0), ece[i].mean(0)), "weights kept", "test ECE",
                                   label=f"width {w}").opts(color=PALETTE[i % len(PALETTE)])
                          for i, w in enumerate(widths)]).opts(
        logx=True, width=780, height=340, show_grid=True, legend_position="right",
        title="test ECE against the weights kept (mean of seeds; dense at the right)")
    said = "; ".join(f"width {w} ({weights[i]:,} weights): best round kept {_fmt(best_size[i])} weights at test "
                     f"accuracy {_fmt(pick(acc)[i])} (dense {_fmt(acc[i, :, 0])}), ECE {_fmt(best_ece[i])} against "
                     f"dense {_fmt(dense_ece[i])}" for i, w in enumerate(widths))
    return dict(passed=bool((size_spread < start_spread / 4).all() and calibrated),
                values=np.log10(start_spread) - np.log10(size_spread),
                effect_label="orders of magnitude by which IMP narrows the spread of network sizes (starting sizes' "
                             "max/min against the best pruned sizes')",
                detail=f"digits, {s['flip_rate']:.0%} symmetric flips, one-hidden-layer MLPs of widths "
                       f"{', '.join(map(str, widths))} (a {start_spread:.0f}× range of sizes), Adam 1e-3, "
                       f"{e} epochs per round, {s['rounds']} rounds each removing {s['fraction']:.0%} of the "
                       f"remaining weights (smallest magnitude over both layers) and rewinding the rest to their "
                       f"initial values; the best round by test accuracy. {said}. Best pruned sizes span "
                       f"{_fmt(size_spread)}× over the widths. Reproduced if, on every seed, the best pruned sizes "
                       f"span less than a quarter of the starting sizes' range and every best pruned net has a lower "
                       f"test ECE than its dense start.",
                figure=(fig_acc + fig_ece).cols(1))


def _auc(score, positive) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(positive, dtype=bool), np.asarray(score, dtype=float)))


def _data_diet(s):
    """One split and one draw of the flips (data_seed, noise_seed 0); the claim's seeds are the inits (and batch
    orders), over which the paper averages its scores."""
    at = s["at"]
    dials = dict(_NOISY_DIGITS, epochs=at, loss_snapshots=at + 1, data_seed=0, noise_seed=0)
    ds = _sweep("label_noise", {"flip_rate": [dials.pop("flip_rate")]}, s["seeds"], **dials).squeeze("flip_rate")
    flipped = ds.flipped.isel(seed=0).values.astype(bool)  # the same flips for every init
    assert (ds.flipped.values == flipped).all()
    out, rows = {}, []
    for score in ("el2n", "grand"):
        v = ds[f"example_{score}"]  # (seed, snapshot, example)
        per_init = np.array([_auc(v.sel(seed=sd, snapshot=at).values, flipped) for sd in ds.seed.values])
        averaged = _auc(v.sel(snapshot=at).mean("seed").values, flipped)
        at_init = _auc(v.sel(snapshot=0).mean("seed").values, flipped)
        out[score] = dict(per_init=per_init, averaged=averaged, at_init=at_init)
        rows += [(score.upper(), f"epoch {e}", _auc(v.sel(snapshot=e).mean("seed").values, flipped))
                 for e in ds.snapshot.values]
    el2n = out["el2n"]
    passed = all(o["averaged"] > 0.9 and o["at_init"] < 0.6 for o in out.values())
    bars = _bars(rows, ["score", "epoch"], "AUC of the score against the flipped mask",
                 f"Data diet: early scores averaged over {len(s['seeds'])} inits find the flipped labels", ylim=(0, 1))
    return dict(passed=bool(passed), values=el2n["per_init"],
                effect_label=f"AUC of EL2N at epoch {at} against the flipped labels, one init",
                detail=f"digits, 40 % symmetric flips, one split and one draw of the flips, {len(s['seeds'])} inits: "
                       + "; ".join(f"{k.upper()} at epoch {at}: AUC per init {_fmt(o['per_init'])}, averaged over "
                                   f"the inits {o['averaged']:.3f}, at initialization {o['at_init']:.3f}"
                                   for k, o in out.items()), figure=bars)


def _dsmi(s):
    from .viz.plots import curves_by

    every = s["every"]
    ds = _sweep("label_noise", {"flip_rate": [0.0, 0.9]}, s["seeds"], dataset="digits", width=512, depth=2,
                lr=1e-3, batch_size=128, epochs=s["epochs"], spectra_every=every, eval_every=every, loss_snapshots=0)
    dsmi = ds.feature_dsmi  # (flip_rate, seed, epoch): DSMI of the last hidden features with the true test labels
    rise = dsmi.isel(epoch=-1) - dsmi.isel(epoch=0)
    clean, random = rise.sel(flip_rate=0.0).values, rise.sel(flip_rate=0.9).values
    acc = ds.test_acc.isel(epoch=-1)
    fit = ds.train_acc.isel(epoch=-1).sel(flip_rate=0.9).values
    passed = (clean > 0).all() and abs(random.mean()) < 0.25 * clean.mean()
    return dict(passed=bool(passed), values=clean - random,
                effect_label="DSMI rise (final − initial), true labels − random labels",
                detail=f"digits, MLP 512 × 2, {s['epochs']} epochs, DSMI of the last hidden features with the "
                       f"test set's classes: rise with the true labels {_fmt(clean)} (test accuracy "
                       f"{_fmt(acc.sel(flip_rate=0.0).values)}); with random labels (90 % symmetric flips: uniform) "
                       f"{_fmt(random)} (train accuracy on them {_fmt(fit)}, test "
                       f"{_fmt(acc.sel(flip_rate=0.9).values)}); at initialization "
                       f"{_fmt(dsmi.isel(epoch=0).values.ravel())}",
                figure=curves_by(ds, "feature_dsmi", "flip_rate"))


def _ptq_accuracy(net, d, w_fmt, a_fmt) -> float:
    """Test accuracy of `net` after post-training quantization: weights per channel in `w_fmt` (None: fp32),
    every layer's input with a static scale calibrated on the training inputs in `a_fmt` (None: fp32)."""
    import torch

    from .probes import ptq

    ranges = ptq.calibrate(net, [(d.x_train,)]) if a_fmt is not None else None
    q = ptq.quantized(net, w_fmt, ranges, act_fmt=a_fmt) if (w_fmt or a_fmt) else net
    with torch.no_grad():
        return float((q(d.x_test).argmax(-1) == d.y_test).float().mean())


def _zeroquant_fp(s):
    from .probes import qerror

    setups = {"A int8": (None, "int8"), "A fp8 e4m3": (None, "fp8_e4m3"),
              "W int4, A fp8": ("int4", "fp8_e4m3"), "W fp4 e2m1, A fp8": ("fp4_e2m1", "fp8_e4m3"),
              "W int8, A int8": ("int8", "int8"), "W fp8, A fp8": ("fp8_e4m3", "fp8_e4m3")}
    drops = {name: [] for name in setups}
    for seed in s["seeds"]:
        net, d = qerror.digits_mlp(seed, s["epochs"], s["width"])
        base = _ptq_accuracy(net, d, None, None)
        for name, (w, a) in setups.items():
            drops[name].append(base - _ptq_accuracy(net, d, w, a))
    drops = {k: np.array(v) for k, v in drops.items()}
    act_ok = drops["A fp8 e4m3"].mean() <= drops["A int8"].mean()
    w_ok = drops["W fp4 e2m1, A fp8"].mean() <= drops["W int4, A fp8"].mean() + 0.005
    bars = _bars([(k, float(v.mean())) for k, v in drops.items()], "formats", "test-accuracy drop",
                 "Post-training quantization: FP against INT at equal bits", xrotation=30)
    return dict(passed=bool(act_ok and w_ok), values=drops["W int4, A fp8"] - drops["W fp4 e2m1, A fp8"],
                effect_label="test-accuracy drop, int4 − fp4 weights (activations fp8)",
                detail=f"MLP 64-{s['width']}-{s['width']}-10 on digits, {s['epochs']} epochs, then weights per "
                       f"channel and activations with static per-tensor scales (calibrated on the training set): "
                       "accuracy drop from fp32 — " + "; ".join(f"{k} {_fmt(v)}" for k, v in drops.items()),
                figure=bars)


def _kurtosis(x) -> float:
    x = np.asarray(x, dtype=float).ravel()
    z = x - x.mean()
    return float((z**4).mean() / (z**2).mean() ** 2 - 3)


def _quant_outliers(s):
    import torch

    from .probes import qerror

    recipes = {"plain": {}, f"weight decay {s['weight_decay']:g}": {"weight_decay": s["weight_decay"]},
               f"clip {s['clip']:g}": {"clip": s["clip"]}}
    out = {name: {"kurtosis": [], "outlier": [], "int6": [], "int4": []} for name in recipes}
    for seed in s["seeds"]:
        for name, kw in recipes.items():
            net, d = qerror.digits_mlp(seed, s["epochs"], s["width"], **kw)
            with torch.no_grad():
                h = net.features(d.x_test)  # the last hidden features, the output layer's input
            peak = h.abs().amax(0)  # per hidden unit
            out[name]["kurtosis"].append(_kurtosis(h))
            out[name]["outlier"].append(float(peak.max() / peak.median().clamp_min(1e-12)))
            base = _ptq_accuracy(net, d, None, None)
            for fmt in ("int6", "int4"):
                out[name][fmt].append(base - _ptq_accuracy(net, d, fmt, fmt))
    out = {n: {k: np.array(v) for k, v in o.items()} for n, o in out.items()}
    plain, wd = out["plain"], out[f"weight decay {s['weight_decay']:g}"]
    # a cliff, not a rounding of the test set: smaller by a point of accuracy (one test point is 0.0017)
    passed = (wd["kurtosis"] < plain["kurtosis"]).all() and wd["int4"].mean() < plain["int4"].mean() - 0.01
    bars = _bars([(n, fmt, float(o[fmt].mean())) for n, o in out.items() for fmt in ("int6", "int4")],
                 ["recipe", "format"], "test-accuracy drop (W and A)", "Quantization cliffs follow the training recipe")
    return dict(passed=bool(passed), values=plain["int4"] - wd["int4"],
                effect_label=f"int4 accuracy drop, plain − weight decay {s['weight_decay']:g}",
                detail=f"MLP 64-{s['width']}-{s['width']}-10 on digits, AdamW lr 1e-3, {s['epochs']} epochs; the last "
                       "hidden features' excess kurtosis, their largest unit's peak over the median unit's, and the "
                       "accuracy drop at int6 / int4 (weights and activations) — " + "; ".join(
                           f"{n}: kurtosis {_fmt(o['kurtosis'])}, peak ratio {_fmt(o['outlier'])}, int6 "
                           f"{_fmt(o['int6'])}, int4 {_fmt(o['int4'])}" for n, o in out.items()), figure=bars)


def _regret(s):
    """One split, one init, one batch order; only the draw of the flipped labels changes between the models: the
    claim's "seeds" are the noise draws (noise_seed), every other stream from seed 0."""
    draws = list(s["seeds"])
    kw = dict(dataset="digits", width=256, depth=2, lr=1e-3, batch_size=128, epochs=s["epochs"], data_seed=0,
              init_seed=0, order_seed=0)
    ds = _sweep("label_noise", {"flip_rate": [0.0, s["flip_rate"]], "noise_seed": draws}, [0], **kw)
    right = ds.test_correct.squeeze("seed").astype(bool)  # (flip_rate, noise_seed, test_example)
    acc = ds.test_acc.isel(epoch=-1).squeeze("seed")  # (flip_rate, noise_seed)
    out = {}
    for rate in (0.0, s["flip_rate"]):
        r = right.sel(flip_rate=rate).values  # (draws, test points)
        others = (r.sum(0, keepdims=True) - r) / (len(draws) - 1)  # the share of the other draws right, per point
        out[rate] = dict(regret=(r != (others > 0.5)).mean(1),  # per draw: points it decides unlike the others
                         lottery=float((r.any(0) & ~r.all(0)).mean()),  # points some draws get right, some wrong
                         acc=acc.sel(flip_rate=rate).values)
    noisy, clean = out[s["flip_rate"]], out[0.0]
    spread_acc = float(noisy["acc"].max() - noisy["acc"].min())
    bars = _bars([(f"{rate:.0%} flips", out[rate]["lottery"]) for rate in out], "labels",
                 "share of test points right in some draws, wrong in others",
                 f"Regret: {len(draws)} draws of the flips, one split, init and order")
    passed = (noisy["lottery"] > 3 * spread_acc and noisy["regret"].mean() > 2 * noisy["acc"].std(ddof=1)
              and clean["lottery"] == 0)
    rate = f"{s['flip_rate']:.0%}"
    return dict(passed=bool(passed), values=noisy["regret"],
                effect_label=f"share of test points a model decides unlike most other draws, {rate} flips",
                detail=f"{len(draws)} draws of {rate} symmetric flips (split, init and batch order fixed): test "
                       f"accuracy {_fmt(noisy['acc'])} (range {spread_acc:.3f}); points right in some draws and "
                       f"wrong in others {noisy['lottery']:.3f}; per draw, points decided unlike most others "
                       f"{_fmt(noisy['regret'])}; without flips the draws are one model (lottery "
                       f"{clean['lottery']:.3f})",
                figure=bars)


def _class_aucs(loss, flipped, label, classes: int) -> np.ndarray:
    """Per observed class: the AUC with which the per-example loss ranks that class's flipped examples above its
    clean ones (nan where a class holds only one kind)."""
    out = np.full(classes, np.nan)
    for c in range(classes):
        m = (label == c) & np.isfinite(loss)
        if 0 < flipped[m].sum() < m.sum():
            out[c] = _auc(loss[m], flipped[m])
    return out


def _long_tail(s):
    at, ratio = s["at"], s["ratio"]
    kw = dict(_NOISY_DIGITS, flip_rate=s["flip_rate"], epochs=at, loss_snapshots=2)
    gaps, said, bars = {}, [], []
    for imb in (1.0, ratio):  # the balanced set is the control: its classes 5-9 need not be harder than 0-4
        ds = _sweep("label_noise", {"imbalance": [imb]}, s["seeds"], **kw).squeeze("imbalance")
        head, tail = [], []
        for seed in ds.seed.values:
            one = ds.sel(seed=seed)
            a = _class_aucs(one.example_loss.sel(snapshot=at).values, one.flipped.values.astype(bool),
                            one.noisy_label.values, 10)
            head.append(np.nanmean(a[:5]))
            tail.append(np.nanmean(a[5:]))
        head, tail = np.array(head), np.array(tail)
        gaps[imb] = head - tail
        name = "balanced" if imb == 1 else f"long-tailed ({ratio:g}:1)"
        said.append(f"{name}: AUC on the head classes 0–4 {_fmt(head)}, on the tail classes 5–9 {_fmt(tail)}")
        bars += [(name, "head (classes 0–4)", float(head.mean())), (name, "tail (classes 5–9)", float(tail.mean()))]
    effect = gaps[ratio] - gaps[1.0]
    fig = _bars(bars, ["training set", "classes"], "AUC: the loss ranks flipped above clean",
                f"Small-loss separation after {at} epochs, {s['flip_rate']:.0%} flips", ylim=(0, 1))
    return dict(passed=bool((effect > 0.05).all()), values=effect,
                effect_label="AUC gap head − tail classes, long-tailed minus balanced",
                detail=f"digits, {s['flip_rate']:.0%} symmetric flips, MLP 512 × 2, the per-example loss after {at} "
                       "epochs, AUC against the flipped mask within each observed class: " + "; ".join(said)
                       + f"; the gap's rise from balanced to long-tailed {_fmt(effect)}", figure=fig)


def _xor_grokking(s):
    """Two separations of the XOR clusters, the same net and steps: where the net fits the flipped labels, and what
    its test accuracy does before and after."""
    from .viz.plots import curves_by

    kw = dict(dataset="xor", input_dim=s["dim"], n_train=s["n"], flip_rate=0.15, width=512, depth=1,
              optimizer="sgd", momentum=0.0, lr=s["lr"], batch_size=s["n"], epochs=s["epochs"], loss_snapshots=0,
              eval_every=max(1, s["epochs"] // 500))
    ds = _sweep("label_noise", {"separation": s["separations"]}, s["seeds"], **kw)
    rows, gains, benign, harmful = [], {}, {}, {}
    for sep in s["separations"]:
        one = ds.sel(separation=sep)
        fit = (one.train_acc == 1).argmax("epoch")  # the first measured epoch fitting every (noisy) label
        fitted = bool((one.train_acc == 1).any("epoch").all())
        at_fit = one.test_acc.isel(epoch=fit).values
        final, mem = one.test_acc.isel(epoch=-1).values, one.memorized.isel(epoch=-1).values
        gains[sep] = final - at_fit
        harmful[sep] = fitted and bool((at_fit < 0.6).all())
        benign[sep] = fitted and bool((final > 0.9).all() and (mem == 1).all())
        rows.append(f"‖μ‖ = {sep:g}: training accuracy 1 at epoch {_fmt(one.epoch.values[fit.values])}, test "
                    f"accuracy then {_fmt(at_fit)}, at the end {_fmt(final)} with {_fmt(mem)} of the flipped labels "
                    "still fit")
    grok = [sep for sep in s["separations"] if harmful[sep] and benign[sep]]
    top = s["separations"][0]
    return dict(passed=bool(grok), values=gains[top],
                effect_label=f"test accuracy, final − when the training set is first fit (‖μ‖ = {top:g})",
                detail=f"XOR clusters, d = {s['dim']}, n = {s['n']}, 15 % flips, ReLU net 512 wide, full-batch GD "
                       f"lr {s['lr']:g}, {s['epochs']} steps: " + "; ".join(rows) + ". Benign overfitting (test "
                       "> 0.9 while every flipped label is fit) at ‖μ‖ = "
                       + (", ".join(f"{x:g}" for x in s["separations"] if benign[x]) or "none")
                       + "; a harmful phase first (test < 0.6 when the training set is fit) at ‖μ‖ = "
                       + (", ".join(f"{x:g}" for x in s["separations"] if harmful[x]) or "none")
                       + "; both in one run (grokking) at ‖μ‖ = " + (", ".join(f"{x:g}" for x in grok) or "none"),
                figure=curves_by(ds, "test_acc", "separation"))


def _dp_noise(s):
    sigma = s["sigma"]
    from .probes.linear import noisy_gd_risk

    reg = {b: np.array([noisy_gd_risk(seed, b, s["reg_sigma"], s["reg_steps"]) for seed in s["seeds"]])
           for b in (0.0, 1.0)}
    ds = _sweep("label_noise", {"grad_noise": s["sigmas"], "noise_correlation": [0.0, 1.0]}, s["seeds"],
                dataset="digits", width=256, depth=2, optimizer="sgd", momentum=0.0, lr=0.1, batch_size=128,
                flip_rate=0.0, epochs=s["epochs"], loss_snapshots=0)
    end = ds.isel(epoch=-1)
    ind, cor = (end.sel(grad_noise=sigma, noise_correlation=b) for b in (0.0, 1.0))
    ratio = np.log(ind.test_loss.values / cor.test_loss.values)
    reg_ratio = np.log(reg[0.0] / reg[1.0])
    rows = "; ".join(f"σ = {x:g}: test loss independent {_fmt(end.test_loss.sel(grad_noise=x, noise_correlation=0.0).values)}, "
                     f"anti-correlated {_fmt(end.test_loss.sel(grad_noise=x, noise_correlation=1.0).values)}; test "
                     f"accuracy {_fmt(end.test_acc.sel(grad_noise=x, noise_correlation=0.0).values)} against "
                     f"{_fmt(end.test_acc.sel(grad_noise=x, noise_correlation=1.0).values)}" for x in s["sigmas"])
    bars = _bars([(f"σ = {x:g}", kind, float(end.test_loss.sel(grad_noise=x, noise_correlation=b).mean()))
                  for x in s["sigmas"] for kind, b in (("independent", 0.0), ("anti-correlated", 1.0))],
                 ["noise multiplier", "noise"], "final test loss (digits)",
                 "Gradient noise: independent against anti-correlated across steps", logy=True)
    return dict(passed=bool((reg_ratio > 0).all() and (ratio > 0).all()), values=ratio,
                effect_label=f"log test-loss ratio, independent / anti-correlated noise, σ = {sigma:g} (digits)",
                detail=f"linear regression (d = 50, spectrum 1/i, GD lr 0.5, σ = {s['reg_sigma']:g}, "
                       f"{s['reg_steps']} steps): excess risk over the last half, independent {_fmt(reg[0.0])}, "
                       f"anti-correlated (β = 1) {_fmt(reg[1.0])}, log ratio {_fmt(reg_ratio)}. Digits, MLP 256 × 2, "
                       f"SGD lr 0.1, {s['epochs']} epochs, noise σ(ξ_t − βξ_(t−1)) on every gradient coordinate: "
                       + rows, figure=bars)


def _deep_linear(s):
    from .probes.linear import deep_linear_risk

    depths = s["depths"]
    runs = {d: [deep_linear_risk(seed, d, steps=s["steps"]) for seed in s["seeds"]] for d in depths}
    ratio = {d: np.array([r["net"] / r["min_norm"] for r in rs]) for d, rs in runs.items()}
    fit = all(r["train_mse"] < 0.01 * r["noise_var"] for rs in runs.values() for r in rs)
    min_norm = np.array([r["min_norm"] for r in runs[depths[0]]])
    deepest = depths[-1]
    bars = _bars([(f"depth {d}", float(v.mean())) for d, v in ratio.items()], "network",
                 "excess risk / minimum-norm interpolant's", "Deep linear nets interpolating noisy labels: "
                 "excess risk against the minimum-norm interpolant", ylim=(0, 1.5))
    passed = fit and all(((v > 0.8) & (v < 1.25)).all() for v in ratio.values())
    return dict(passed=bool(passed), values=ratio[deepest],
                effect_label=f"excess risk, depth-{deepest} linear net / minimum-norm interpolant",
                detail=f"least squares, n = 50, d = 1000 (5 spiked directions, a flat tail of variance 0.02), "
                       f"label noise sd 0.5, linear nets of width 100 from a small random init (depth 1: from "
                       f"zero), full-batch GD for {s['steps']} steps, every net interpolating: {fit}. Excess risk "
                       f"of the minimum-norm interpolant {_fmt(min_norm)} (the noise variance 0.25; predicting 0 "
                       "costs 1); ratio of each net's to it — " + "; ".join(
                           f"depth {d} {_fmt(v)}" for d, v in ratio.items()), figure=bars)


def _crossing(steps, loss, scale, target):
    """(the step where `loss` first falls to `target`, B_simple there), both interpolated between measurements (the
    loss and B_simple on a log scale); nan where it never does."""
    hit = np.flatnonzero(loss <= target)
    if not hit.size:
        return np.nan, np.nan
    k = hit[0]
    if k == 0:
        return float(steps[0]), float(scale[0])
    f = (np.log(loss[k - 1]) - np.log(target)) / (np.log(loss[k - 1]) - np.log(loss[k]))
    return (float(steps[k - 1] + f * (steps[k] - steps[k - 1])),
            float(np.exp(np.log(scale[k - 1]) + f * (np.log(scale[k]) - np.log(scale[k - 1])))))


def _critical_batch(s):
    """McCandlish et al. 2018: steps to a target loss S(B) against the batch size B (the best of a learning-rate
    grid at each B), fitted to S = S_min (1 + B_crit / B); B_crit against the gradient noise scale B_simple measured
    where the runs cross the target."""
    import math

    import holoviews as hv

    from .viz.plots import PALETTE

    sizes, lrs, seeds, targets, n = s["batch_sizes"], s["lrs"], s["seeds"], s["targets"], 1200
    steps_to = np.full((len(targets), len(sizes), len(lrs), len(seeds)), np.nan)
    scale_at = np.full_like(steps_to, np.nan)
    for b, size in enumerate(sizes):
        epochs = max(3, math.ceil(s["max_steps"] / math.ceil(n / size)))
        ds = _sweep("label_noise", {"lr": lrs}, seeds, batch_size=size, epochs=epochs,
                    eval_every=max(1, epochs // 100), flip_rate=0.0, width=128, depth=2, optimizer="sgd",
                    momentum=0.0, n_train=n, noise_scale=True, loss_snapshots=0)
        step = ds.step.transpose("lr", "seed", "epoch").values if ds.step.ndim == 3 else None
        for i in range(len(lrs)):
            for j in range(len(seeds)):
                one = ds.isel(lr=i, seed=j)
                st = step[i, j] if step is not None else ds.step.values
                for t, target in enumerate(targets):
                    steps_to[t, b, i, j], scale_at[t, b, i, j] = _crossing(
                        st, one.train_loss_full.values, one.grad_noise_scale.values, target)
    inv = 1 / np.array(sizes, float)
    crit, simple, fits, said, items = {}, {}, {}, [], []
    for t, target in enumerate(targets):
        reached = np.where(np.isnan(steps_to[t]), np.inf, steps_to[t])
        best = reached.argmin(1)  # (B, seed): the learning rate that gets there in the fewest steps
        s_best = np.take_along_axis(steps_to[t], best[:, None, :], 1)[:, 0, :]
        b_simple = np.take_along_axis(scale_at[t], best[:, None, :], 1)[:, 0, :]
        crit[t], simple[t], fits[t] = np.full(len(seeds), np.nan), np.exp(np.nanmean(np.log(b_simple), 0)), []
        for j in range(len(seeds)):
            ok = np.isfinite(s_best[:, j])
            if ok.sum() >= 2:  # S = a + b / B: a = S_min, b = S_min · B_crit
                (a, bb), *_ = np.linalg.lstsq(np.stack([np.ones(ok.sum()), inv[ok]], 1), s_best[ok, j], rcond=None)
                crit[t][j] = bb / a
                fits[t].append((a, bb))
        colour = PALETTE[t % len(PALETTE)]
        mean_s = np.nanmean(s_best, 1)
        items.append(hv.Scatter((sizes, mean_s), "batch size B", "steps to the target loss",
                                label=f"loss {target:g}: S(B), best lr").opts(color=colour, size=9))
        if fits[t]:
            a, bb = np.mean(fits[t], 0)
            grid = np.geomspace(sizes[0], sizes[-1], 50)
            items.append(hv.Curve((grid, a + bb / grid), "batch size B", "steps to the target loss",
                                  label=f"loss {target:g}: S_min(1 + B_crit/B)").opts(color=colour, line_width=2))
        items.append(hv.VLine(float(np.nanmean(simple[t]))).opts(color=colour, line_dash="dashed", line_width=2))
        said.append(f"train loss {target:g}: S(B) for B = {', '.join(map(str, sizes))} — "
                    + ", ".join(f"{v:.0f}" for v in mean_s) + " steps (seed means, best lr "
                    + ", ".join(f"{lrs[int(np.median(best[b]))]:g}" for b in range(len(sizes)))
                    + f"); fitted B_crit {_fmt(crit[t])}, B_simple at the crossing {_fmt(simple[t])}, ratio "
                    f"{_fmt(crit[t] / simple[t])}")
    ratios = [crit[t] / simple[t] for t in range(len(targets))]
    within = all(bool(((r > 0.25) & (r < 4)).all()) for r in ratios)
    grows = bool((simple[len(targets) - 1] > simple[0]).all())
    fig = hv.Overlay(items).opts(title="Steps to a target loss against the batch size; dashed: B_simple",
                                 logx=True, logy=True, xticks=[(v, str(v)) for v in sizes], width=780,
                                 height=380, show_grid=True,
                                 legend_position="right")
    return dict(passed=within and grows, values=ratios[-1],
                effect_label=f"fitted B_crit / measured B_simple at train loss {targets[-1]:g}",
                detail=f"digits, MLP 128 × 2, plain SGD, {n} training examples, no flips; learning rates "
                       f"{', '.join(map(str, lrs))}; whole-set training loss and B_simple (tr Σ / |G|², exact "
                       "per-example gradients) at every measurement: " + "; ".join(said)
                       + f". B_crit within a factor of 4 of B_simple at every target and seed: {within}; B_simple "
                         f"larger at loss {targets[-1]:g} than at {targets[0]:g} on every seed: {grows}",
                figure=fig)


_FORMAT_PAIRS = ((2, 3, 3, 2), (3, 4, 4, 3))  # (mantissa-heavier e, m, exponent-heavier e, m) at 6 and 8 bits


def _fp_scaling(s):
    loss = {}
    for e, m in s["formats"]:
        ds = _sweep("precision", {"exp_bits": [e]}, s["seeds"], precision="custom", man_bits=m, epochs=s["epochs"],
                    eval_every=s["epochs"])
        loss[(e, m)] = ds.train_loss.isel(epoch=-1).squeeze("exp_bits").values
    diffs = [loss[(e1, m1)] - loss[(e2, m2)] for e1, m1, e2, m2 in _FORMAT_PAIRS]
    bars = _bars([(f"{1 + e + m} bits", f"e{e}m{m}", float(v.mean())) for (e, m), v in loss.items()],
                 ["total bits", "format"], "final training loss",
                 "Exponent against mantissa bits at equal width (per-tensor scaled)")
    return dict(passed=bool(all(d.mean() > 0 for d in diffs)), values=diffs[0],
                effect_label="final training loss, e2m3 − e3m2 (6 bits)",
                detail=f"MLP 64-128-128-10 on digits, weights, activations and gradients rounded (per-tensor scales), "
                       f"{s['epochs']} epochs; final training loss — " + "; ".join(
                           f"e{e}m{m} {_fmt(v)}" for (e, m), v in loss.items())
                       + f"; at 6 bits e2m3 − e3m2 {_fmt(diffs[0])}, at 8 bits e3m4 − e4m3 {_fmt(diffs[1])}",
                figure=bars)


CLAIMS = {c.key: c for c in [
    Claim("early_learning", "Arpit et al. 2017; Liu et al. 2020 (ELR)",
          "Networks trained on noisy labels first fit the clean labels (early learning), then memorize the wrong ones.",
          "With 40 % symmetric flips on digits, test accuracy peaks early and falls; without flips it does not.",
          _early_learning, {"seeds": [0, 1], "epochs": 60}, {"seeds": [0, 1, 2, 3, 4], "epochs": 100}),
    Claim("sgd_temperature", "Sclocchi, Geiger & Wyart 2023",
          "SGD noise (the temperature lr/batch) matters in the feature-learning regime and not in the lazy one.",
          "Teacher perceptron: the test-error change from T = 1e-4 to 3e-3 is positive at α = 0.1 and near zero at "
          "α = 100.", _sgd_temperature, {"seeds": [0, 1, 2], "steps": 5000}, {"seeds": [0, 1, 2], "steps": 30_000}),
    Claim("tc_power_law", "Sclocchi, Geiger & Wyart 2023",
          "The temperature T_c at which SGD noise starts to change the trained model (and eventually its "
          "performance) is a power law of the training-set size P, as are the total weight change and the "
          "training time; the exponents depend on the density of data near the decision boundary.",
          "Teacher perceptron, lazy regime (α = 100), trained to zero hinge loss over T and P at two boundary "
          "densities χ: the final weight change against T, T_c where it reaches a fixed level, its exponent in P.",
          _tc_power_law,
          {"seeds": [0, 1, 2], "steps": 20_000, "sizes": [64, 128, 256, 512],
           "temperatures": [0.01, 0.03, 0.1, 0.3, 1.0], "levels": [2.0, 1.5, 3.0]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 50_000, "sizes": [64, 128, 256, 512, 1024],
           "temperatures": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0], "levels": [2.0, 1.5, 3.0]}),
    Claim("edge_of_stability", "Cohen et al. 2021",
          "Full-batch gradient descent drives the sharpness up to 2/η, where it hovers (the edge of stability).",
          "Tanh MLP, η = 0.2: the top Hessian eigenvalue starts below 2/η = 10 and its late mean is within 20 % of it.",
          _edge_of_stability, {"seeds": [0, 1], "steps": 1000}, {"seeds": [0, 1, 2], "steps": 1000},
          paper_number="sharpness hovers just above 2/η"),
    Claim("softmax_collapse", "Prieto et al. 2025 (grokking at the edge of numerical stability)",
          "Without regularisation, float32 softmax rounds correct predictions to exactly zero loss (softmax "
          "collapse), halting learning; more precision delays it.",
          "Modular addition p = 31: float32 reaches ≥ 50 % exactly-zero losses, float64 does not.",
          _softmax_collapse, {"seeds": [0, 1, 2], "epochs": 1500}, {"seeds": [0, 1, 2, 3, 4], "epochs": 1500}),
    Claim("fp8_training", "Micikevicius et al. 2022 (FP8 formats for deep learning)",
          "With per-tensor scaling, FP8 (E4M3) training matches FP32 accuracy.",
          "MLP on digits, weights, activations and gradients rounded to e4m3 with per-tensor scales: final test "
          "accuracy within 0.05 of fp32 on every seed.", _fp8_training, {"seeds": [0, 1], "epochs": 6},
          {"seeds": [0, 1, 2], "epochs": 12}),
    Claim("terminal_snr", "Lin et al. 2024 (common diffusion noise schedules and sample steps are flawed)",
          "Schedules with non-zero terminal SNR leak signal at t = T; sampled from pure noise, models cannot make "
          "very bright or dark images. Zero terminal SNR, v-prediction and trailing timesteps fix it.",
          "Bright/dark digits: ε, scaled-linear, leading spacing narrows the brightness spread below the data's; "
          "zero terminal SNR, v, trailing restores it.", _terminal_snr,
          {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 1000}, {"seeds": [0, 1, 2], "steps": 3000, "n_samples": 1000}),
    Claim("offset_noise", "Hu et al. 2024 (One More Step), on Guttenberg's offset noise",
          "Models trained with a schedule whose last step keeps some signal cannot make images far from average "
          "brightness; ε-prediction models are patched with offset noise — a per-image constant added to the "
          "training noise — which lets the mean brightness move.",
          "Bright/dark digits in Lin et al.'s flawed setting (ε, scaled-linear, leading spacing): the spread of "
          "per-image brightness with offset noise 0.1 and 0.2 against none.", _offset_noise,
          {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 1000, "offsets": [0.1, 0.2]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 1000, "offsets": [0.1, 0.2]}),
    Claim("one_more_step", "Hu et al. 2024 (One More Step)",
          "Instead of retraining a model whose schedule keeps signal at its last step, a compact network adds one "
          "step before it: from pure noise (and the prompt) to the model's first timestep; the frozen model then "
          "makes images far from average brightness, and the prompt controls their low frequencies.",
          "Bright/dark digits in Lin et al.'s flawed setting (ε, scaled-linear, leading spacing), the denoiser "
          "frozen; the request is a held-out image's brightness: how far samples lie from the brightness asked "
          "for, and their spread against the data's, with One More Step and without.", _one_more_step,
          {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 1000},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 1000}),
    Claim("terminal_snr_fixes", "Lin et al. 2024 (common diffusion noise schedules and sample steps are flawed)",
          "Three fixes together make training and sampling agree: rescale the schedule to zero terminal SNR, train "
          "with v-prediction, and start sampling from the last timestep.",
          "Bright/dark digits on Stable Diffusion's schedule: the three fixes together, and each one left out.",
          _terminal_snr_fixes, {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 1000},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 1000}),
    Claim("ambient", "Daras et al. 2024 (how much is a noisy image worth?)",
          "Training only on noisy data cannot match clean data, but a small clean share (about 10 %) plus many "
          "highly noisy samples, trained with the ambient loss, reaches a model trained on as many clean samples.",
          "Eight Gaussians, 90 % of the points at σ = 1, at a small and a large data-set size: 10 % clean + 90 % "
          "noisy (ambient loss) against the noisy data alone, the clean 10 % alone and all-clean data.",
          _ambient, {"seeds": [0, 1, 2], "steps": 1000, "sizes": [200, 5000], "n_samples": 2000, "sample_steps": 50},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "sizes": [200, 1000, 5000], "n_samples": 2000,
           "sample_steps": 50},
          paper_number="10 % clean + 90 % noisy matches all-clean data (30k to 1.3M images)", long=True),
    Claim("immiscible", "Li et al. 2024 (immiscible diffusion)",
          "Assigning noise to images by minimum distance within a batch makes the mapping less miscible and "
          "training faster (up to 3× for DDIM on CIFAR-10).", "Eight Gaussians and 8×8 digits: sample quality "
          "(sliced Wasserstein to held-out data) at four equal-step checkpoints, immiscible against independent "
          "noise; the batch's noise-to-data distance as the mechanism.", _immiscible,
          {"seeds": [0, 1, 2], "steps": 500, "n_samples": 2000, "sample_steps": 50},
          {"seeds": [0, 1, 2, 3, 4], "steps": 2000, "n_samples": 2000, "sample_steps": 50},
          paper_number="up to 3× faster training (DDIM, CIFAR-10)"),
    Claim("laplace_schedule", "Hang et al. 2024 (improved noise schedule for diffusion training)",
          "Importance-sampling the training noise levels around logSNR = 0 (a Laplace distribution in logSNR) "
          "trains diffusion models more efficiently than the standard cosine schedule, for different prediction "
          "targets.",
          "Eight Gaussians and 8×8 digits, sampled with the cosine schedule (DDIM, 50 steps): training levels "
          "from Laplace(μ = 0, b = 0.5) in logSNR against the cosine schedule's own, sample quality at four "
          "equal-step checkpoints (full profile: b = 1 too).", _laplace_schedule,
          {"seeds": [0, 1, 2], "steps": 500, "n_samples": 2000, "sample_steps": 50, "scales": [0.5]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 2000, "n_samples": 2000, "sample_steps": 50, "scales": [0.5, 1.0]}),
    Claim("inference_scaling", "Ma et al. 2025 (inference-time scaling for diffusion models beyond scaling "
          "denoising steps)",
          "Beyond more denoising steps, spending inference compute on searching for better initial noises under a "
          "verifier substantially improves the quality of the samples.",
          "Eight Gaussians: each sample the best of M = 1, 4, 16, 64 initial noises under the data's true "
          "log-density as verifier; the verifier's score and the kept samples' distance to held-out data (which "
          "can worsen as the search over-fits the verifier).", _inference_scaling,
          {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 2000, "sample_steps": 50, "best_of": 64},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50, "best_of": 256}),
    Claim("negative_transfer", "Go et al. 2023 (addressing negative transfer in diffusion models)",
          "Read as multi-task learning over noise levels, diffusion training shows task affinity that shrinks as "
          "the gap between noise levels widens, and negative transfer between levels.",
          "Eight Gaussians and 8×8 digits: after training, the loss gradients in ten bins of t and their cosine "
          "against the bins' logSNR gap; the share of bin pairs whose gradients conflict.", _negative_transfer,
          {"seeds": [0, 1, 2], "steps": 500, "n_samples": 1000, "sample_steps": 20},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50}),
    Claim("noise_conditioning", "Sun et al. 2025 (is noise conditioning necessary for denoising generative models?)",
          "Without the noise level as an input, most denoising generative models degrade only gracefully (some even "
          "improve); a few samplers fail.",
          "Eight Gaussians: the same denoiser with and without its time input, sampled with DDPM, DDIM and Heun.",
          _noise_conditioning, {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 2000, "sample_steps": 50},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50},
          paper_number="CIFAR-10 FID 2.23 for their noise-unconditional model"),
    Claim("label_noise_diffusion", "Na et al. 2024 (label-noise robust diffusion models)",
          "Noisy class labels make a conditional diffusion model generate data that mismatch the condition; a "
          "transition-aware weighted denoising score matching loss (TDSM), which mixes the clean classes' scores by "
          "the label-transition probabilities, restores samples aligned with the condition.",
          "Eight Gaussians with each mode its class, 20 % and 40 % of the training classes flipped: the plain "
          "conditional loss against the transition-aware one, the share of samples landing in the class asked "
          "for.", _label_noise_diffusion,
          {"seeds": [0, 1, 2], "steps": 1500, "n_samples": 1000, "sample_steps": 50, "flips": [0.2, 0.4]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50, "flips": [0.2, 0.4]},
          long=True),
    Claim("geometry_adaptive", "Kadkhodaie et al. 2024 (generalization in diffusion models arises from "
          "geometry-adaptive harmonic representations)",
          "Two denoisers trained on non-overlapping subsets learn nearly the same score, and so generate nearly the "
          "same image from the same noise, once the subsets are large enough; below that each memorizes its own "
          "training images.",
          "8×8 digits: two denoisers on disjoint halves of 16 to 512 images each, sampled from the same initial "
          "noise; the distance between their samples against the distance to their own nearest training image.",
          _geometry_adaptive, {"seeds": [0, 1, 2], "steps": 2000, "n_samples": 400, "sample_steps": 50,
                               "sizes": [16, 512]},  # the check reads the ends; the full curve fills in between
          {"seeds": [0, 1, 2, 3, 4], "steps": 5000, "n_samples": 400, "sample_steps": 50,
           "sizes": [16, 32, 64, 128, 256, 512]}, long=True),
    Claim("sampling_noise", "Albergo, Boffi & Vanden-Eijnden 2023 (stochastic interpolants)",
          "One learned model defines a family of generative processes with the same marginals — a deterministic "
          "probability flow and stochastic ones with an adjustable noise level — and the stochastic ones control "
          "the likelihood better than the deterministic one.",
          "Eight Gaussians: one trained denoiser sampled with DDIM at η = 0 (the ODE), 0.5 and 1 (ancestral), at 10, "
          "50 and 200 steps.", _sampling_noise,
          {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 2000, "etas": [0.0, 0.5, 1.0],
           "step_counts": [10, 50, 200]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "etas": [0.0, 0.25, 0.5, 1.0],
           "step_counts": [10, 20, 50, 100, 200, 500]}),
    Claim("resolution_shift", "Chen 2023 (on the importance of noise scheduling for diffusion models)",
          "The best noise schedule depends on the image size: as the resolution grows the optimum moves towards "
          "noisier schedules, e.g. a smaller input scaling factor b.",
          "The same digits at 8, 16 and 32 pixels a side (upsampled), a convolutional denoiser trained with the "
          "sigmoid schedule at input scales b = 1, 0.5, 0.25; the best b per resolution.", _resolution_shift,
          {"seeds": [0, 1, 2], "sides": [8, 16, 32], "scales": [1.0, 0.5, 0.25], "steps": 1000, "width": 16,
           "depth": 2, "batch_size": 64, "n_train": 2000, "n_samples": 400, "sample_steps": 50},
          {"seeds": [0, 1, 2, 3, 4], "sides": [8, 16, 32], "scales": [2.0, 1.0, 0.5, 0.25, 0.125], "steps": 3000,
           "width": 64, "depth": 3, "batch_size": 256, "n_train": 2000, "n_samples": 1000, "sample_steps": 50},
          long=True),
    Claim("relay_snr", "Teng et al. 2024 (relay diffusion)",
          "The same noise level leaves a higher signal-to-noise ratio per frequency at a higher resolution, so a "
          "schedule tuned at one resolution is too easy at a larger one.",
          "Digits at 8, 16 and 32 pixels a side under the same pixel noise: SNR per frequency (no training).",
          _relay_snr, {"seeds": [0, 1, 2], "images": 500, "sides": [8, 16, 32], "sigma": 1.0},
          {"seeds": [0, 1, 2, 3, 4], "images": 1300, "sides": [8, 16, 32], "sigma": 1.0}),
    Claim("gumbel_precision", "Zheng et al. 2024 (masked diffusion models exploit inaccurate categorical sampling)",
          "Gumbel-max categorical sampling with 32-bit floats is inaccurate: rare tokens are drawn too seldom, which "
          "lowers the effective temperature and the diversity of what is sampled.",
          "One token at logit 0 and 4,095 tokens 15 nats below: the tail's share of millions of Gumbel-max draws "
          "with float32 against float64 uniforms, each against its exact expectation (no training).",
          _gumbel_precision, {"seeds": [0, 1, 2], "gap": 15.0, "n_tail": 4095, "draws": 10_000_000},
          {"seeds": [0, 1, 2, 3, 4], "gap": 15.0, "n_tail": 4095, "draws": 100_000_000}),
    Claim("mdm_sampling_precision", "Zheng et al. 2024 (masked diffusion models exploit inaccurate categorical "
          "sampling)",
          "In a trained masked diffusion model, the many-step sampler's float32 Gumbel-max draws rare tokens too "
          "seldom: the samples lose token diversity, a lower temperature in effect, which flatters the generative "
          "perplexity they are scored by.",
          "8×8 digits at 16 grey levels, the masked diffusion study's model; the same models sampled by the "
          "ancestral sampler with Gumbel-max in float64, float32 and float16 (a control): the entropy of each "
          "pixel's level, float64 minus float32.", _mdm_sampling_precision,
          {"seeds": [0, 1, 2], "steps": 3000, "n_samples": 500, "sample_steps": 1024, "width": 256},
          {"seeds": [0, 1, 2, 3, 4], "steps": 5000, "n_samples": 2000, "sample_steps": 4096, "width": 256},
          long=True),
    Claim("ptq_calibration", "Shang et al. 2023 (post-training quantization on diffusion models)",
          "A denoiser's activations change with the sampling time, so post-training quantization calibrated for one "
          "time fails; calibrated across the times it samples at, an 8-bit model keeps full-precision quality.",
          "Eight Gaussians: int8 weights and activations, ranges calibrated at every DDIM time or at t = 0.5 only.",
          _ptq_calibration, {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 2000, "sample_steps": 50,
                             "format": "int8"},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50, "format": "int8"}),
    Claim("fp_vs_int_diffusion", "Chen et al. 2024 (low-bitwidth floating point quantization for diffusion models)",
          "At the same bit width, floating-point post-training quantization gives diffusion models better samples "
          "than integer quantization; 8-bit floating point shows no noticeable loss against fp32.",
          "Eight Gaussians: the same trained denoiser sampled with fp8 e4m3 against int8 and fp4 e2m1 against int4 "
          "weights and activations, and at W4A8 (4-bit weights, 8-bit layer inputs) floating point against integer.",
          _fp_vs_int_diffusion, {"seeds": [0, 1, 2], "steps": 1000, "n_samples": 2000, "sample_steps": 50,
                                 "pairs": [["fp8_e4m3", "int8"], ["fp4_e2m1", "int4"]],
                                 "mixed": [["fp4_e2m1", "fp8_e4m3"], ["int4", "int8"]]},
          {"seeds": [0, 1, 2, 3, 4], "steps": 3000, "n_samples": 2000, "sample_steps": 50,
           "pairs": [["fp8_e4m3", "int8"], ["fp4_e2m1", "int4"]],
           "mixed": [["fp4_e2m1", "fp8_e4m3"], ["int4", "int8"]]}),
    Claim("elr", "Liu et al. 2020 (early-learning regularization prevents memorization of noisy labels)",
          "A regularizer that pulls the outputs towards targets averaged over the early-learning phase keeps a "
          "network from memorizing its wrong labels, so its accuracy stays near the early peak.",
          "Digits, 40 % flips (symmetric, and pair: class k to k+1), MLP 512 × 2, Adam 1e-3: ELR's final test "
          "accuracy above CE's on every seed (by 0.05 on average) and ELR fitting under half the flipped labels CE "
          "fits, for both kinds of flips.", _elr, {"seeds": [0, 1, 2], "epochs": 60},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 100}),
    Claim("regret", "Nagaraj et al. 2025 (regretful decisions under label noise)",
          "Models trained on different plausible draws of the label noise reach the same population accuracy but "
          "make different individual mistakes: each person faces a lottery of mistakes the accuracy does not show.",
          "Digits, 20 % symmetric flips, MLP 256 × 2; the split, the init and the batch order fixed, only the draw "
          "of the flips changes: the share of test points some draws get right and others wrong is more than three "
          "times the range of the draws' accuracies, each draw decides more points unlike the majority than twice "
          "the accuracies' sd, and without flips every draw is the same model.", _regret,
          {"seeds": list(range(8)), "epochs": 20, "flip_rate": 0.2},
          {"seeds": list(range(20)), "epochs": 60, "flip_rate": 0.2}),
    Claim("small_loss", "Dedeoglu et al. 2023 (Adaptive-k)",
          "Learning only from the mini-batch samples whose loss is below a threshold found during training "
          "(Adaptive-k) beats using all samples or a fixed number of low-loss samples, and comes closest to the "
          "oracle that removes the noisy samples, without knowing the noise rate.",
          "Digits, 40 % symmetric flips, MLP 512 × 2, Adam 1e-3, 5 epochs on all samples first: Adaptive-k (keep a "
          "sample when its loss is at most the running mean of the batch-mean loss) against all samples on every "
          "seed, and against a fixed k (the 60 % a known noise rate gives, and 80 %) on the mean; the oracle "
          "drops the flipped samples.", _small_loss, {"seeds": [0, 1, 2], "epochs": 60, "keeps": [0.6, 0.8]},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 100, "keeps": [0.6, 0.8]}),
    Claim("dropout", "Chen et al. 2021 (compressing features for learning with noisy labels)",
          "Dropout acts as a compression of the features that keeps a network from overfitting noisy labels, "
          "so it generalizes better than without it.",
          "Digits, 40 % symmetric flips, MLP 512 × 2, Adam 1e-3: with dropout on the hidden units the final test "
          "accuracy is higher and fewer flipped labels are fit than without, on every seed, at every rate tried.",
          _dropout, {"seeds": [0, 1, 2], "epochs": 60, "rates": [0.0, 0.6], "rate": 0.6},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 100, "rates": [0.0, 0.3, 0.6, 0.8], "rate": 0.6}),
    Claim("pretrain_noise", "Chen et al. 2024 (understanding and mitigating the label noise in pre-training on "
          "downstream tasks)",
          "Slight label noise in pre-training can help in-domain transfer, but it always hurts transfer out of the "
          "pre-training domain, because the noise shapes the feature space.",
          "Digits: an MLP pre-trained with 0–40 % flipped labels, frozen; a linear probe on its features, on clean "
          "test digits (in domain) and on the digits moved two pixels (out of domain).", _pretrain_noise,
          {"seeds": [0, 1, 2], "epochs": 40, "rates": [0.0, 0.05, 0.1, 0.2, 0.4], "shift": 2},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 100, "rates": [0.0, 0.05, 0.1, 0.2, 0.4], "shift": 2}),
    Claim("lottery_noise", "Arora et al. 2023 (quantifying lottery tickets under label noise: accuracy, "
          "calibration, and complexity)",
          "Iterative magnitude pruning converges to networks of comparable size from full networks whose sizes span "
          "orders of magnitude, and the best pruned networks are less over-confident than the full ones.",
          "Digits with 20 % flipped labels: IMP (rewinding to the initial weights) from one-hidden-layer MLPs of "
          "widths 32 to 512; the size of the best pruned net per width, and its test ECE against the dense net's.",
          _lottery_noise, {"seeds": [0, 1, 2], "widths": [32, 128, 512], "flip_rate": 0.2, "epochs": 30,
                           "rounds": 15, "fraction": 0.3},
          {"seeds": [0, 1, 2, 3, 4], "widths": [16, 64, 256, 1024], "flip_rate": 0.2, "epochs": 60, "rounds": 20,
           "fraction": 0.3}),
    Claim("data_diet", "Paul et al. 2021 (deep learning on a data diet)",
          "Simple scores a few epochs into training, averaged over several initializations — the norm of the "
          "error vector (EL2N) and of the gradient (GraNd) — find the important examples early, and detect "
          "noisy ones.",
          "Digits, 40 % symmetric flips, MLP 512 × 2, Adam 1e-3, one split and one draw of the flips: EL2N and "
          "GraNd at epoch 4, averaged over the inits, rank the flipped examples above the clean ones with an AUC "
          "above 0.9, while at initialization they do not (AUC below 0.6).", _data_diet, {"seeds": [0, 1, 2], "at": 4},
          {"seeds": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "at": 4}),
    Claim("dsmi", "Liao et al. 2023 (noise-resilient diffusion spectral entropy)",
          "The diffusion spectral mutual information between a network's representation and the class label "
          "rises during learning that generalizes and stays flat when the network overfits (random labels).",
          "Digits, MLP 512 × 2, Adam 1e-3: the DSMI of the last hidden features with the test classes rises on "
          "every seed with the true labels; with random labels its mean change is under a quarter of that rise.",
          _dsmi, {"seeds": [0, 1, 2], "epochs": 30, "every": 5}, {"seeds": [0, 1, 2, 3, 4], "epochs": 100, "every": 10}),
    Claim("perp_grad", "Prieto et al. 2025 (grokking at the edge of numerical stability)",
          "Removing the gradient's component along the weights (⊥Grad), which only scales the logits, makes "
          "modular arithmetic generalize quickly without any regularization.",
          "Modular addition p = 53, AdamW lr 0.01 without weight decay: with ⊥AdamW the final test accuracy is "
          "above 0.9 on every seed, with plain AdamW below 0.1.", _perp_grad, {"seeds": [0, 1, 2], "epochs": 300},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 600}),
    Claim("stablemax", "Prieto et al. 2025 (grokking at the edge of numerical stability)",
          "StableMax, a softmax whose numerators grow linearly instead of exponentially, prevents softmax collapse "
          "and lets the task grok without regularization.",
          "Modular addition p = 31, float32, AdamW lr 0.03, no weight decay: with StableMax no training loss is "
          "ever exactly zero while softmax's are (> 50 %), and the final test accuracy is above 0.9 on every seed.",
          _stablemax, {"seeds": [0, 1, 2], "epochs": 1500}, {"seeds": [0, 1, 2], "epochs": 8000}),
    Claim("noisyquant", "Liu et al. 2023 (NoisyQuant)",
          "A fixed uniform noisy bias added to activations before a given quantizer (and its effect removed after "
          "the layer) provably lowers the quantization error for heavy-tailed activations.",
          "A linear layer (256 → 64) on post-GELU activations, int6 per tensor, noisy bias U(±Δ/2): the output's "
          "mean squared error falls by more than 3 % on every seed.", _noisyquant,
          {"seeds": [0, 1, 2, 3, 4], "rows": 4096}, {"seeds": list(range(10)), "rows": 16384},
          paper_number="ImageNet top-1 +1.7 % (ViT), +1.1 % (DeiT), +0.5 % (Swin) at 6-bit activations"),
    Claim("fp8_stability", "Lee et al. 2024 (to FP8 and back again)",
          "Training in narrower floating-point formats is less stable: more seeds diverge, over a narrower range of "
          "learning rates, than with BF16 or FP32.",
          "MLP on digits, unscaled (no per-tensor scales), 4 learning rates × 3 seeds per format: the band of "
          "learning rates where no seed diverges is narrower for fp8 e4m3 than for fp32 and bf16.",
          _fp8_stability, {"seeds": [0, 1, 2], "epochs": 10, "lrs": [0.001, 0.003, 0.01, 0.03]},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 20, "lrs": [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1]}),
    Claim("zeroquant_fp", "Wu et al. 2023 (ZeroQuant-FP)",
          "In post-training quantization, FP8 activations do better than INT8 ones and FP4 weights as well as or "
          "better than INT4 ones, so W4A8 works in floating point.",
          "A trained MLP on digits, quantized after training (weights per channel, activations with static "
          "per-tensor scales calibrated on the training set): FP8 (e4m3) activations lose no more test accuracy "
          "than INT8 on average, and FP4 (e2m1) weights with FP8 activations no more than INT4 weights (+0.005).",
          _zeroquant_fp, {"seeds": [0, 1, 2, 3, 4], "epochs": 20, "width": 256},
          {"seeds": list(range(10)), "epochs": 40, "width": 512},
          paper_number="FP8 activations beat INT8 more clearly beyond 1B parameters"),
    Claim("quant_outliers", "Ahmadian et al. 2023 (intriguing properties of quantization at scale)",
          "Activation outliers and the accuracy cliffs of quantization are not a product of scale alone but of the "
          "training recipe: optimization choices such as weight decay suppress them.",
          "MLP on digits, AdamW lr 1e-3, trained plainly, with weight decay 0.1, or with gradients clipped to norm "
          "1: with weight decay the last hidden features' excess kurtosis is lower on every seed and the int4 "
          "(weights and activations) accuracy drop smaller on average than plain, by more than 0.01.",
          _quant_outliers,
          {"seeds": [0, 1, 2], "epochs": 30, "width": 256, "weight_decay": 0.1, "clip": 1.0},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 200, "width": 256, "weight_decay": 0.1, "clip": 1.0}),
    Claim("long_tail", "Lu et al. 2023 (label-noise learning with intrinsically long-tailed data)",
          "On long-tailed data with noisy labels, clean and noisy samples are hard to tell apart on the tail "
          "classes, so selection criteria that work on balanced data fail there.",
          "Digits, 30 % symmetric flips, MLP 512 × 2, Adam 1e-3, the training set balanced or long-tailed (20:1, "
          "sizes falling exponentially with the class): after 2 epochs, the AUC with which the per-example loss "
          "ranks each observed class's flipped examples above its clean ones; the head (classes 0–4) minus tail "
          "(5–9) gap is larger on the long-tailed set than on the balanced one by more than 0.05 on every seed.",
          _long_tail, {"seeds": [0, 1, 2], "at": 2, "ratio": 20.0, "flip_rate": 0.3},
          {"seeds": list(range(10)), "at": 2, "ratio": 20.0, "flip_rate": 0.3}),
    Claim("xor_grokking", "Xu et al. 2023 (benign overfitting and grokking in ReLU networks for XOR cluster data)",
          "A two-layer ReLU net trained by gradient descent on XOR clusters with flipped labels first fits every "
          "label with near-random test accuracy, then later reaches near-optimal test accuracy while still "
          "fitting the flipped labels: harmful overfitting, then grokking into benign overfitting.",
          "XOR clusters in d = 1000 with n = 100 training points, 15 % flips, one hidden ReLU layer of 512, "
          "full-batch GD lr 0.05, at two cluster distances ‖μ‖: reproduced when at one of them the test accuracy "
          "is below 0.6 on every seed when the training set is first fit, and above 0.9 at the end with every "
          "flipped label still fit.", _xor_grokking,
          {"seeds": [0, 1], "dim": 1000, "n": 100, "lr": 0.05, "epochs": 100, "separations": [12.0, 20.0]},
          {"seeds": [0, 1, 2, 3, 4], "dim": 1000, "n": 100, "lr": 0.05, "epochs": 3000,
           "separations": [12.0, 20.0]}),
    Claim("dp_noise", "Koloskova et al. 2023 (correlated noise provably beats independent noise for differentially "
          "private learning)",
          "Noise injected into gradient descent that is anti-correlated across steps (as in matrix-factorization "
          "DP mechanisms) leaves a better model than DP-SGD's independent noise at the same noise multiplier.",
          "Gradient noise σ(ξ_t − βξ_(t−1)), β = 1 against β = 0: on linear regression (d = 50, spectrum 1/i) the "
          "excess risk, and on digits (MLP 256 × 2, SGD lr 0.1) the final test loss at σ = 0.3, lower with the "
          "anti-correlated noise on every seed (σ = 0.1 and 1 reported beside).", _dp_noise,
          {"seeds": [0, 1, 2], "epochs": 20, "sigmas": [0.1, 0.3, 1.0], "sigma": 0.3, "reg_sigma": 0.1,
           "reg_steps": 2000},
          {"seeds": [0, 1, 2, 3, 4], "epochs": 40, "sigmas": [0.1, 0.3, 1.0], "sigma": 0.3, "reg_sigma": 0.1,
           "reg_steps": 4000}),
    Claim("fp_scaling", "Sun et al. 2025 (scaling laws for floating point quantization training)",
          "In floating-point quantized training, exponent bits contribute slightly more to the model's quality "
          "than mantissa bits, so at a given width the best split gives the exponent the larger share.",
          "MLP on digits with weights, activations and gradients rounded to a custom IEEE-style format (per-tensor "
          "scales): at 6 bits e3m2 ends with a lower training loss than e2m3, and at 8 bits e4m3 lower than e3m4 "
          "(means over seeds).", _fp_scaling,
          {"seeds": [0, 1, 2], "epochs": 20, "formats": [(2, 3), (3, 2), (4, 1), (3, 4), (4, 3), (5, 2)]},
          {"seeds": list(range(8)), "epochs": 40, "formats": [(2, 3), (3, 2), (4, 1), (3, 4), (4, 3), (5, 2)]}),
    Claim("deep_linear", "Chatterji & Long 2023 (deep linear networks can benignly overfit when shallow ones do)",
          "Deep linear networks trained by gradient flow from a random initialization to interpolate noisy labels "
          "come close to the excess risk of the minimum ℓ2-norm interpolant: depth neither helps nor hurts in "
          "hiding the noise.",
          "Least squares with a spiked covariance (5 strong directions, a long flat tail) and label noise, n = 50 ≪ "
          "d = 1000: linear nets of depth 1–4 trained by GD until they interpolate; each depth's excess risk "
          "within 0.8–1.25 times the minimum-norm interpolant's on every seed.", _deep_linear,
          {"seeds": [0, 1, 2], "depths": [1, 2, 4], "steps": 2000},
          {"seeds": [0, 1, 2, 3, 4], "depths": [1, 2, 3, 4], "steps": 4000}),
    Claim("critical_batch", "McCandlish et al. 2018 (an empirical model of large-batch training)",
          "The gradient noise scale, a statistic measured from the gradients during training, predicts the largest "
          "useful batch size (the critical batch size beyond which a larger batch no longer cuts the steps to a "
          "given loss), and it grows as the loss falls.",
          "Digits, MLP 128 × 2, plain SGD, 1,200 examples, no flips: for each batch size B the steps S(B) to a "
          "whole-set training loss of 0.5 and of 0.2 (the best of a learning-rate grid, interpolated between "
          "measurements), fitted to S = S_min(1 + B_crit/B); B_simple = tr Σ / |G|² on the whole training set "
          "where the best runs cross the target (geometric mean over B). Reproduced when B_crit is within a factor "
          "of 4 of B_simple at both losses on every seed, and B_simple is larger at the lower loss on every seed.",
          _critical_batch,
          {"seeds": [0, 1, 2], "batch_sizes": [8, 32, 128, 512], "lrs": [0.1, 0.2, 0.4, 0.8], "max_steps": 1200,
           "targets": [0.5, 0.2]},
          {"seeds": [0, 1, 2, 3, 4], "batch_sizes": [8, 16, 32, 64, 128, 256, 512],
           "lrs": [0.05, 0.1, 0.2, 0.4, 0.8, 1.6], "max_steps": 1200, "targets": [0.5, 0.2]}),
    Claim("double_descent", "Nakkiran et al. 2019 (deep double descent)",
          "With label noise the test error of a growing model first falls, rises to a peak where the model just "
          "fits the training set, then falls again (model-wise double descent); the peak grows with the noise.",
          "The `double_descent` preset (one-hidden-layer MLP, 500 digits, full batch, 1500 epochs): with 20 % flips "
          "the error rises by > 0.03 from width 8 to 16 and falls by > 0.03 from 16 to 256 (means over seeds); "
          "without flips it does not rise.", _double_descent,
          {"seeds": [0, 1, 2], "widths": [8, 16, 256], "epochs": 1500},
          {"seeds": [0, 1, 2, 3, 4], "widths": [8, 16, 256], "epochs": 1500}),
]}


def _validate(keys, profile: str) -> None:
    for key in keys:
        if key not in CLAIMS:
            raise ConfigError("claim", key, f"one of {', '.join(CLAIMS)}")
    if profile not in PROFILES:
        raise ConfigError("profile", profile, f"one of {', '.join(PROFILES)}")


def _machine() -> str:
    """Where the checks run, for their times: the accelerator the studies pick, else the CPU's cores."""
    import os

    import torch

    from .engine.context import pick_device

    dev = pick_device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{dev.type}, {os.cpu_count()} cores" if dev.type == "cpu" else dev.type


def _took(r: dict) -> str:
    """A result's time as the report says it ('' when it was not timed: a claim the profile skips)."""
    if r.get("seconds") is None:
        return ""
    s = float(r["seconds"])
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _header(key: str, profile: str) -> dict:
    """What every result says of its claim, whatever happened to the check."""
    c = CLAIMS[key]
    return dict(key=key, paper=c.paper, claim=c.claim, test=c.test, profile=profile, paper_number=c.paper_number)


def check(key: str, profile: str = "quick") -> dict:
    """Run one claim's check at its `profile` settings: {key, paper, claim, test, profile, status (pass/fail),
    effect, ...} (a long claim too: only a whole quick-profile run leaves it out)."""
    _validate([key], profile)
    c = CLAIMS[key]
    settings = c.quick if profile == "quick" else c.full
    out = _header(key, profile)
    result = c.check(settings)
    effect = spread(result.pop("values"))  # the effect per seed: mean ± sd, the 95 % interval of the mean, n
    return {**out, "status": "pass" if result.pop("passed") else "fail", "seeds": settings["seeds"],
            "effect": effect.mean, "effect_sd": effect.sd, "effect_lo": effect.lo, "effect_hi": effect.hi,
            "n": effect.n, **result}


def save(result: dict, path: str | Path, figure_path: str | Path | None = None) -> None:
    """Write a result as JSON (and its figure as HTML next to it)."""
    from .viz.plots import standalone_html

    fig = result.get("figure")
    if fig is not None and figure_path:
        Path(figure_path).write_text(standalone_html(fig))  # opens offline too
    data = {k: v for k, v in result.items() if k != "figure"}
    data["figure"] = Path(figure_path).name if fig is not None and figure_path else None
    Path(path).write_text(json.dumps(data, indent=2, default=float))


def effect_text(r: dict) -> str:
    """A result's effect as the report and the README say it: mean ± sd [95 % interval], n."""
    from .stats import Spread

    if r.get("effect") is None:
        return "—"
    n = int(r.get("n") or 0)
    return str(Spread(r["effect"], r.get("effect_sd", float("nan")), n, r.get("effect_lo", float("nan")),
                      r.get("effect_hi", float("nan"))))


VERDICTS = {"pass": "reproduced", "fail": "not reproduced here", "skipped": "not run (long)", "error": "error"}
TABLE_START, TABLE_END = "<!-- claims table: workbench reproduce --readme -->", "<!-- end of the claims table -->"


TABLE_HEAD = ["| claim | paper | verdict | effect as measured |", "|---|---|---|---|"]


def verdict(r: dict, profile: str = "quick") -> str:
    """A result's verdict as a page of `profile` says it: marked with its own profile when that is another (a long
    claim's full-profile result in the quick report and the README's table)."""
    said = VERDICTS.get(r["status"], r["status"])
    return said if r.get("profile", profile) == profile else f"{said} ({r['profile']} profile)"


def quick_page(kept: list[dict]) -> list[dict]:
    """The quick report's rows from a folder's results (every profile's): each claim's quick result, and the long
    claims a whole quick run leaves out by their full-profile results (else a row saying how to run them)."""
    pairs = {(r["key"], r.get("profile")): r for r in kept}
    return [pairs[k, "quick"] if (k, "quick") in pairs else _left_out(k, pairs)
            for k in CLAIMS if (k, "quick") in pairs or CLAIMS[k].long]


def readme_results(results: list[dict], profile: str, kept: list[dict]) -> list[dict]:
    """The rows `--readme` writes after a run: its results, and after a quick run the full-profile results its
    report shows for the long claims it left out (the README's table says what the quick report says); `kept` is
    every result the report folder holds (`stored`)."""
    if profile != "quick":
        return results
    ran = {r["key"] for r in results}
    return results + [r for r in quick_page(kept) if r["key"] not in ran and r.get("profile") == "full"]


def stored(out: Path) -> list[dict]:
    """Every result a report folder holds (both profiles'), as its reproduce/results.json lists them; [] if none."""
    try:
        earlier = json.loads((Path(out) / "reproduce" / "results.json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in earlier if isinstance(r, dict) and "key" in r] if isinstance(earlier, list) else []


def _left_out(key: str, held: dict) -> dict:
    """What the quick report says of a long claim a whole quick run left out: its full-profile result when the
    folder holds one, else that it was not run and how to run it."""
    if (key, "full") in held:
        return held[key, "full"]
    return dict(_header(key, "quick"), status="skipped", effect=None, effect_label="", figure=None,
                detail=f"left out of a whole quick run (its quick settings take over 3 minutes on one core): "
                       f"`workbench reproduce --only {key}`, or the full profile")


def _row(r: dict) -> str:
    effect = f"{effect_text(r)}: {r['effect_label']}" if r.get("effect") is not None else "—"
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a '|' in a label would end its cell
    return f"| `{r['key']}` | {cell(r['paper'])} | **{verdict(r)}** | {cell(effect)} |"


def table(results: list[dict]) -> str:
    """The README's table of claims: verdict and effect as measured (mean ± sd [95 % interval], n), one row each."""
    return "\n".join(TABLE_HEAD + [_row(r) for r in results])


def readme_rows(text: str) -> dict[str, dict]:
    """The claims table of a README, read back: {key: {verdict, effect (the mean, or None)}}."""
    import re

    if TABLE_START not in text or TABLE_END not in text:
        return {}
    block = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    out = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*`([a-z0-9_]+)`\s*\|(?:[^|\\]|\\.)*\|\s*\*\*([^*]+)\*\*\s*\|\s*([^|]*)\|", line)
        if m:
            number = re.match(r"\s*([+-]?[0-9.]+)", m.group(3))
            out[m.group(1)] = {"verdict": m.group(2), "effect": float(number.group(1)) if number else None}
    return out


PROFILES_START, PROFILES_END = ("<!-- profiles table: workbench reproduce --readme -->",
                                "<!-- end of the profiles table -->")


def profiles_table(kept: list[dict]) -> str:
    """The README's table of both profiles from a report folder's results (`stored`): each claim's verdict and time
    at the quick profile, its verdict, effect and time at the full one ('—' where it has not run there), each
    profile's count and its claims' times added up, and the machine the times are from (a time from another machine
    than most of its profile's names its own)."""
    from collections import Counter

    pairs = {(r["key"], r.get("profile")): r for r in kept}
    usual = {p: Counter(str(r.get("machine")) for r in kept if r.get("profile") == p and r.get("machine"))
             for p in PROFILES}
    usual = {p: c.most_common(1)[0][0] for p, c in usual.items() if c}

    def took(r: dict | None, p: str) -> str:
        if r is None or r.get("seconds") is None:
            return "—"
        other = r.get("machine") and str(r["machine"]) != usual.get(p)
        return _took(r) + (f" ({r['machine']})" if other else "")

    rows = ["| claim | quick profile | time | full profile | effect at full settings | time |",
            "|---|---|---|---|---|---|"]
    for k in CLAIMS:
        quick, full = pairs.get((k, "quick")), pairs.get((k, "full"))
        unrun = "left out (long)" if CLAIMS[k].long else "—"
        rows.append(f"| `{k}` | {_said(quick, unrun)} | {took(quick, 'quick')} | {_said(full, '—')} "
                    f"| {_short_effect(full)} | {took(full, 'full')} |")
    totals = []
    for p in PROFILES:
        mine = [r for r in kept if r.get("profile") == p]
        ran = [r for r in mine if r["status"] in ("pass", "fail", "error")]
        totals += [f"{sum(r['status'] == 'pass' for r in ran)} of {len(ran)} reproduced",
                   _took({"seconds": sum(float(r.get("seconds") or 0) for r in mine)}) if mine else "—"]
    rows.append(f"| all | {totals[0]} | {totals[1]} | {totals[2]} | | {totals[3]} |")
    where = "; ".join(f"{p} profile: {m}" for p, m in usual.items())
    said = ("Each time is its notebook's own, added up in the last row (claims that ran at the same time took less on "
            f"the clock). Machines: {where}.")
    return "\n".join(rows) + ("\n\n" + textwrap.fill(said, 118) if where else "")


def _said(r: dict | None, missing: str) -> str:
    return missing if r is None else f"**{VERDICTS.get(r['status'], r['status'])}**"


def _short_effect(r: dict | None) -> str:
    if r is None or r.get("effect") is None:
        return "—"
    return f"{r['effect']:+.3f} ± {float(r.get('effect_sd', float('nan'))):.3f} (n={int(r.get('n') or 0)})"


def profiles_rows(text: str) -> dict[str, dict]:
    """The profiles table of a README, read back: {key: {quick, full}}, each the verdict said ('—' where none)."""
    if PROFILES_START not in text or PROFILES_END not in text:
        return {}
    out = {}
    for line in text.split(PROFILES_START, 1)[1].split(PROFILES_END, 1)[0].splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            out[cells[0].strip("`")] = {"quick": cells[1], "full": cells[3]}
    return out


def write_readme(path: Path, results: list[dict], kept: list[dict] | None = None) -> bool:
    """Put the rows of `results` into the README's claims table between its markers, in the registry's order; the
    rows of claims not in `results` stay as they were (so `reproduce --only a,b --readme` updates those two), rows
    of claims no longer registered go. With `kept` (every result the report folder holds) the profiles table is
    written whole from it too. True if it changed."""
    import re

    text = Path(path).read_text()
    markers = [(TABLE_START, TABLE_END)] + ([(PROFILES_START, PROFILES_END)] if kept is not None else [])
    for start, end in markers:
        if start not in text or end not in text:
            raise ConfigError("readme", str(path), f"a README holding the markers {start} and {end}")
    rows = {}
    for line in text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].splitlines():
        m = re.match(r"\|\s*`([a-z0-9_]+)`", line)
        if m:
            rows[m.group(1)] = line
    rows.update({r["key"]: _row(r) for r in results})
    new = _between(text, TABLE_START, TABLE_END, "\n".join(TABLE_HEAD + [rows[k] for k in CLAIMS if k in rows]))
    if kept is not None:
        new = _between(new, PROFILES_START, PROFILES_END, profiles_table(kept))
    if new != text:
        Path(path).write_text(new)
    return new != text


def _between(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def report(results: list[dict], profile: str, held: dict | None = None) -> str:
    """The index page: claims, pass/fail, effect sizes, figures, links to the executed notebooks; `held` ({profile:
    claims}) links the folder's reports of the other profiles."""
    color = {"pass": "#2ca02c", "fail": "#d62728", "skipped": "#888", "error": "#d62728"}
    rows = []
    for r in results:
        effect = "" if r.get("effect") is None else f"{effect_text(r)}<br><small>{html.escape(r['effect_label'])}" \
                                                     "</small>"
        links = [f'<a href="{html.escape(r["notebook"])}">notebook</a>'] if r.get("notebook") else []
        if r.get("figure"):
            links.append(f'<a href="{html.escape(r["figure"])}">figure</a>')
        rows.append(
            f"<tr><td><b>{html.escape(r['key'])}</b><br><small>{html.escape(r['paper'])}</small></td>"
            f"<td>{html.escape(r['claim'])}<br><small><i>Checked:</i> {html.escape(r['test'])}</small></td>"
            f"<td style='color:{color.get(r['status'], '#000')};font-weight:bold'>"
            f"{html.escape(verdict(r, profile))}</td>"
            f"<td>{effect}</td><td><small>{html.escape(r.get('paper_number') or '—')}</small></td>"
            f"<td><small>{html.escape(str(r.get('detail', '')))}</small></td>"
            f"<td><small>{html.escape(_took(r))}</small></td><td>{' · '.join(links)}</td></tr>")
    passed = sum(r["status"] == "pass" for r in results)
    ran = sum(r["status"] in ("pass", "fail", "error") for r in results)
    own = [r for r in results if r.get("profile", profile) == profile]
    elsewhere = len(results) - len(own)
    also = f" ({elsewhere} of them, long claims a whole quick run leaves out, at the full profile)" if elsewhere else ""
    others = "; ".join(f'<a href="{p}.html">the {p} profile\'s report</a> ({n} claim{"s" * (n != 1)})'
                       for p, n in (held or {}).items() if p != profile)
    others = f"<p>Also in this folder: {others}.</p>" if others else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Noise Workbench — reproduction report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:6px;vertical-align:top}}th{{background:#f4f4f4}}</style></head><body>
<h1>Reproduction report ({html.escape(profile)} profile)</h1>
<p>{passed} of {ran} findings reproduced{also}. Each check trains the models over the seeds listed in its notebook; the
quick profile is small, the full one uses longer runs and more seeds. A finding that does not show at these settings
is reported as not reproduced here, with its numbers: mean ± sd over seeds, the 95 % interval of the mean, n.
{html.escape(_times(own))}</p>{others}
<table><tr><th>claim</th><th>what the paper reports / what is checked</th><th>result</th><th>effect size (here)</th>
<th>the paper's number</th><th>detail</th><th>time</th><th>links</th></tr>
{''.join(rows)}
</table></body></html>"""


def _times(results: list[dict]) -> str:
    """The report's line on time: the whole and where it ran (runs read back from the store take seconds)."""
    timed = [r for r in results if r.get("seconds") is not None]
    if not timed:
        return ""
    total = _took({"seconds": sum(float(r["seconds"]) for r in timed)})
    where = ", ".join(sorted({str(r.get("machine", "")) for r in timed} - {""}))
    together = any("at a time" in str(r.get("machine", "")) for r in timed)
    return f"Time: {total} for {len(timed)} notebooks on {where or 'this machine'}" \
           + (" (each notebook's own time, added up: some ran at the same time, so the run took less)"
              if together else "") + "; a claim whose runs were already stored reads them back in seconds."


def notebook(key: str):
    """The reproduction notebook of one claim (papermill parameters: profile, result_path, figure_path)."""
    import nbformat

    c = CLAIMS[key]
    v4 = nbformat.v4
    params = v4.new_code_cell('profile = "quick"  # quick | full\nresult_path = ""  # where to write the result '
                              '(JSON); empty: nowhere\nfigure_path = ""  # and its figure (HTML)')
    params.metadata["tags"] = ["parameters"]
    cells = [
        v4.new_markdown_cell(f"# Reproduction: {c.key}\n*{c.paper}*\n\n**The paper** (after its abstract): {c.claim}"
                             + (f"\n\n**The paper's number:** {c.paper_number}" if c.paper_number else "")
                             + f"\n\n**Checked here**, over seeds: {c.test}\n\nRun by `workbench reproduce`; "
                             "the result lands in the report at `data/reports/index.html`: the verdict, and the "
                             "effect as mean ± sd over seeds with its 95 % interval and n."),
        params,
        v4.new_code_cell(f"from workbench import reproduce\n\nresult = reproduce.check({key!r}, profile)\n"
                         "print(result['status'], '-', result['effect_label'], result['effect'])\n"
                         "print(result['detail'])"),
        v4.new_code_cell("result['figure']"),
        v4.new_code_cell("if result_path:\n    reproduce.save(result, result_path, figure_path or None)"),
    ]
    for i, cell in enumerate(cells):
        cell.id = f"{key}-{i}"  # stable ids: the same claim writes the same file
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_notebooks(folder: Path) -> list[Path]:
    """Write (or refresh) notebooks/reproduce/<claim>.ipynb; returns the ones that changed."""
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for key in CLAIMS:
        path = folder / f"{key}.ipynb"
        text = nbformat.writes(notebook(key))
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def run_all(profile: str, out: Path, notebooks: Path, kernel: str, keys=None, timeout: int = 3600,
            progress: bool = True, jobs: int = 1) -> tuple[list[dict], Path]:
    """Execute each claim's notebook with papermill into out/reproduce/ and write out/index.html (with the results
    already there of the claims not run now at the same profile; the other profile's stay in results.json and its
    own page). Returns this run's results, in the order of `keys`.

    The notebooks run one after another in one kernel, started once: a fresh kernel per notebook spent about 7 s
    on its start and imports, several minutes over the quick profile. Each notebook sets everything it uses
    (its parameters, then imports and the check), so one notebook's state does not reach the next's result; a
    kernel that dies is restarted for the next notebook. With `jobs` > 1, that many kernels take the claims in
    turn, the longest first by their last times here, each kernel given an equal share of the CPU's cores
    (OMP_NUM_THREADS); a claim's time is then its own wall time on a machine shared with the others."""
    import os
    import queue
    import threading

    from jupyter_client import KernelManager
    from tqdm.auto import tqdm

    keys = claims_to_run(profile, keys)
    _validate(keys, profile)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError("jobs", jobs, "a whole number of kernels, at least 1")
    folder = out / "reproduce"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = min(jobs, len(keys))
    machine = _machine() + (f", {jobs} claims at a time" if jobs > 1 else "")
    env = dict(os.environ)
    if jobs > 1:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    todo: queue.Queue = queue.Queue()
    for key in _longest_first(keys, out, profile) if jobs > 1 else keys:
        todo.put(key)
    results: dict[str, dict] = {}
    bar = tqdm(total=len(keys), desc=f"reproduce ({profile})", unit="claim", disable=not progress)
    lock = threading.Lock()
    index = out / "index.html"
    failures: list[BaseException] = []  # what stopped a kernel's thread (not a claim's error: that is its result)

    def write() -> None:
        """The report as it stands: each claim's result is kept as soon as it is known (an interrupted run keeps
        the claims it finished), each file replaced whole. results.json holds every profile's results; index.html
        is this profile's report, <profile>.html each profile's."""
        kept = _merged(out, [results[k] for k in keys if k in results], profile)
        by_profile = {p: [r for r in kept if r.get("profile") == p] for p in PROFILES}
        held = {p: len(rs) for p, rs in by_profile.items() if rs}
        if by_profile["quick"]:
            by_profile["quick"] = quick_page(kept)
        pages = [(out / f"{p}.html", report(rs, p, held)) for p, rs in by_profile.items() if rs]
        for path, text in [(folder / "results.json", json.dumps(kept, indent=2, default=float)),
                           (index, report(by_profile[profile], profile, held)), *pages]:
            part = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"  # the store's way: hidden, renamed
            part.write_text(text)
            part.replace(path)

    def work() -> None:
        km = KernelManager(kernel_name=kernel)
        try:
            while True:
                try:
                    key = todo.get_nowait()
                except queue.Empty:
                    return
                r = _execute(key, profile, km, env, folder, notebooks, kernel, timeout, machine)
                with lock:
                    results[key] = r
                    write()
                bar.update(1)
        except BaseException as e:  # noqa: BLE001 - raised again by the caller's thread once the others end
            failures.append(e)
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)

    try:
        if jobs == 1:
            work()
        else:
            threads = [threading.Thread(target=work, name=f"reproduce-{i}", daemon=True) for i in range(jobs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        bar.close()
    write()
    if failures:
        raise failures[0]
    return [results[k] for k in keys if k in results], index


def _longest_first(keys: list, out: Path, profile: str) -> list:
    """The claims ordered by their last time in this report folder at `profile`, longest first (claims never
    timed here first of all: they may be long), so that parallel kernels end near together."""
    earlier = {r["key"]: r.get("seconds") for r in stored(out) if r.get("profile") == profile}
    took = {k: earlier[k] if isinstance(earlier.get(k), (int, float)) else math.inf for k in keys}
    return sorted(keys, key=lambda k: -took[k])


def _execute(key: str, profile: str, km, env: dict, folder: Path, notebooks: Path, kernel: str, timeout: int,
             machine: str) -> dict:
    """One claim's notebook in the kernel `km` (started, or restarted if it died): its result, timed."""
    import papermill as pm
    from nbconvert import HTMLExporter

    if not km.has_kernel or not km.is_alive():
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        km.start_kernel(env=env)
    stem = f"{key}-{profile}"  # each profile's notebook and figure of a claim kept apart
    executed, result_path = folder / f"{stem}.ipynb", folder / f"{stem}.json"
    result_path.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        pm.execute_notebook(str(notebooks / f"{key}.ipynb"), str(executed), kernel_name=kernel, km=km,
                            parameters={"profile": profile, "result_path": str(result_path),
                                        "figure_path": str(folder / f"{stem}-figure.html")},
                            progress_bar=False, execution_timeout=timeout)
        r = json.loads(result_path.read_text())
    except (pm.PapermillExecutionError, RuntimeError) as e:  # a cell's error; a dead kernel (RuntimeError)
        what = f"{e.ename}: {e.evalue}" if isinstance(e, pm.PapermillExecutionError) else f"the kernel: {e}"
        r = dict(_header(key, profile), status="error", effect=None, effect_label="", detail=what, figure=None)
    r["seconds"], r["machine"] = round(time.perf_counter() - started, 1), machine
    if executed.is_file():
        body, _ = HTMLExporter().from_filename(str(executed))
        (folder / f"{stem}.html").write_text(body)
        r["notebook"] = f"reproduce/{stem}.html"
    if r.get("figure"):
        r["figure"] = f"reproduce/{r['figure']}"
    return r


def expected(out: Path, keys, profile: str) -> str:
    """What the last runs in this report folder say the claims about to run will take: '' when none of them has a
    time there at this profile."""
    keys = claims_to_run(profile, keys)
    took = {r["key"]: r for r in stored(out) if r.get("profile") == profile
            and isinstance(r.get("seconds"), (int, float)) and r["key"] in keys}
    if not took:
        return ""
    seconds = sum(r["seconds"] for r in took.values())
    machines = sorted({str(r.get("machine", "")) for r in took.values()})
    when = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    some = "it" if len(keys) == 1 else f"{len(took)} of them"
    return (f"reproduce ({profile}): {len(keys)} claim{'s' * (len(keys) != 1)} to run; {some} ran here before, in "
            f"about {when} ({', '.join(machines)})")


def _merged(out: Path, results: list[dict], profile: str) -> list[dict]:
    """The folder's results after a run of some claims at `profile`: these, and every other result it already
    holds — the other claims at this profile (a rerun of one claim keeps the rest of the report) and every claim at
    the other profiles (a full-profile run of one claim keeps the quick report) — by profile, in the registry's
    order; a claim no longer registered is dropped. Each result keeps its own time and machine."""
    held = {(r["key"], r.get("profile")): r for r in stored(out)}
    held.update({(r["key"], profile): r for r in results})
    return [held[k, p] for p in PROFILES for k in CLAIMS if (k, p) in held]
