"""HoloViews plots of runs: the same functions feed notebooks (inline), the apps and exported figures."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr

from ..studies import get as get_study, names as study_names

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
LABELS = {
    "test_acc": "clean test accuracy", "train_clean_acc": "train acc (clean subset)",
    "memorized": "flipped fit to noisy label", "train_loss": "train loss", "test_loss": "test loss",
    "ece": "test ECE", "train_acc": "train acc (noisy labels)", "flipped_true_acc": "flipped predicted as true",
}


def _resolve(run_or_ds):
    """(Dataset, Study class) from a Run or a Dataset carrying a `study` attribute."""
    ds = run_or_ds.ds if hasattr(run_or_ds, "ds") and not isinstance(run_or_ds, xr.Dataset) else run_or_ds
    return ds, get_study(ds.attrs.get("study", "label_noise"))


def frame(ds: xr.Dataset, axis: str) -> pd.DataFrame:
    """The scalar-per-step variables of a run as a DataFrame (what the live Buffer holds too)."""
    cols = [n for n, v in ds.data_vars.items() if v.dims == (axis,)]
    return ds[cols].to_dataframe().reset_index()


def group_plot(df: pd.DataFrame, cls, title: str, metrics: list[str], logx=False, logy=False) -> hv.Overlay:
    """One panel of curves: each metric over the study's axis; the peak of `cls.peak` marked if it is drawn."""
    axis = cls.axis
    curves = []
    for i, m in enumerate(metrics):
        if m not in df:
            continue
        d = df[[axis, m]].rename(columns={m: "value"})
        curves.append(hv.Curve(d, axis, ("value", title), label=LABELS.get(m, m))
                      .opts(color=PALETTE[i % len(PALETTE)], line_width=2))
    peak_metric, direction = cls.peak
    if peak_metric in metrics and peak_metric in df and df[peak_metric].notna().any():
        values = df[peak_metric].to_numpy(dtype=float)
        i = int(np.nanargmax(values) if direction == "max" else np.nanargmin(values))
        at, best = df[axis].iloc[i], values[i]
        curves.append(hv.VLine(at).opts(color="gray", line_dash="dashed", line_width=1))
        curves.append(hv.Scatter([(at, best)], axis, ("value", title), label=f"peak {best:.3f} at {axis} {at}")
                      .opts(color="black", size=9, marker="triangle"))
    if not curves:
        curves = [hv.Curve([], axis, ("value", title))]
    return hv.Overlay(curves).opts(
        hv.opts.Overlay(title=title, legend_position="bottom_left", responsive=True, height=300, min_width=320,
                        logx=logx, logy=logy, show_grid=True, toolbar="above"))


def curves(run_or_ds, logx: bool = False, logy: bool = False) -> hv.Layout:
    """All of the study's curve groups for one run (loss, accuracy, ...), peak marked."""
    ds, cls = _resolve(run_or_ds)
    df = frame(ds, cls.axis)
    return hv.Layout([group_plot(df, cls, t, ms, logx, logy) for t, ms in cls.curves.items()]).cols(3)


def loss_histogram(run_or_ds, bins: int = 40) -> hv.HoloMap:
    """Per-example training loss (on the noisy labels), clean vs flipped, at each snapshot epoch (a slider)."""
    ds, cls = _resolve(run_or_ds)
    if "example_loss" not in ds:
        return hv.HoloMap({0: hv.Overlay([hv.Histogram([])])}, kdims=["snapshot"])
    flipped = ds["flipped"].values.astype(bool)
    losses = ds["example_loss"].values
    top = float(np.nanmax(losses)) if np.isfinite(losses).any() else 1.0
    edges = np.linspace(0, max(top, 1e-6), bins + 1)
    frames = {}
    for k, ep in enumerate(ds["snapshot"].values):
        hists = []
        for name, mask, color in (("clean", ~flipped, PALETTE[0]), ("flipped", flipped, PALETTE[1])):
            counts, _ = np.histogram(losses[k][mask], bins=edges)
            hists.append(hv.Histogram((edges, counts), kdims=["loss"], vdims=["examples"], label=f"{name} (n={int(mask.sum())})")
                         .opts(color=color, alpha=0.55, line_alpha=0))
        frames[int(ep)] = hv.Overlay(hists).opts(title=f"per-example loss, {cls.axis} {int(ep)}",
                                                 responsive=True, height=300, legend_position="top_right")
    return hv.HoloMap(frames, kdims=[hv.Dimension("snapshot", label=f"snapshot {cls.axis}")])


def overview(run_or_ds) -> hv.Layout:
    """Curves plus the per-example loss histogram: what the app shows after a run."""
    ds, _ = _resolve(run_or_ds)
    layout = curves(ds)
    if "example_loss" in ds:
        layout = (layout + loss_histogram(ds)).cols(3)
    return layout
