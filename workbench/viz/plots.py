"""HoloViews plots of runs: the same functions feed notebooks (inline), the apps and exported figures."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr

from .. import stats
from ..studies import get as get_study

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
#: labels of quantities that are not a study's metrics (the metrics' own come from their declarations)
OTHER_LABELS = {"sqnr": "SQNR (dB)"}


def label(metric: str, cls=None) -> str:
    """A metric's declared label (and unit): of study `cls`, else of whichever study declares it."""
    from ..studies import names

    for c in [cls] if cls is not None else [get_study(n) for n in names()]:
        if any(m.name == metric for m in c.metrics):
            return c.label(metric)
    return OTHER_LABELS.get(metric, metric)


def axis_label(title: str, most: int = 28) -> str:
    """A curve group's title as a y-axis label: a long one cut at its first aside ("Sample quality (sliced ...)"
    -> "Sample quality"), else shortened; an axis label as long as the title is cut off by the figure's height."""
    if len(title) <= most:
        return title
    head = re.split(r" \(|: |, ", title, maxsplit=1)[0]
    return head if len(head) <= most else head[:most - 1] + "…"


def _resolve(run_or_ds):
    """(Dataset, Study class) from a Run or a Dataset carrying a `study` attribute."""
    ds = run_or_ds.ds if hasattr(run_or_ds, "ds") and not isinstance(run_or_ds, xr.Dataset) else run_or_ds
    return ds, get_study(ds.attrs.get("study", "label_noise"))


def frame(ds: xr.Dataset, axis: str) -> pd.DataFrame:
    """The scalar-per-step variables of a run as a DataFrame (what the live Buffer holds too)."""
    cols = [n for n, v in ds.data_vars.items() if v.dims == (axis,)]
    return ds[cols].to_dataframe().reset_index()


def group_plot(df: pd.DataFrame, cls, title: str, metrics: list[str], logx=False, logy=False) -> hv.Overlay:
    """One panel of curves: each metric over the study's axis; the best of the headline metric marked if it is
    drawn."""
    axis = cls.axis
    curves = []
    for i, m in enumerate(metrics):
        if m not in df:
            continue
        d = df[[axis, m]].rename(columns={m: "value"})
        curves.append(hv.Curve(d, axis, ("value", axis_label(title)), label=cls.label(m))
                      .opts(color=PALETTE[i % len(PALETTE)], line_width=2))
        if d["value"].isna().any():  # measured now and then (nan between): the points, or nothing would show
            curves.append(hv.Scatter(d.dropna(), axis, ("value", axis_label(title)))
                          .opts(color=PALETTE[i % len(PALETTE)], size=5))
    head = cls.metric(cls.headline)
    i = head.best_index(df[head.name]) if head.name in metrics and head.name in df else None
    if i is not None:
        at, best = df[axis].iloc[i], float(df[head.name].iloc[i])
        curves.append(hv.VLine(at).opts(color="gray", line_dash="dashed", line_width=1))
        curves.append(hv.Scatter([(at, best)], axis, ("value", axis_label(title)),
                                 label=best_label(head, best, axis, at))
                      .opts(color="black", size=9, marker="triangle"))
    if not curves:
        curves = [hv.Curve([], axis, ("value", axis_label(title)))]
    return hv.Overlay(curves).opts(
        hv.opts.Overlay(title=title, legend_position="bottom", responsive=True, height=340, min_width=320,
                        logx=logx, logy=logy, show_grid=True, toolbar="above"))


def best_label(metric, best: float, axis: str, at) -> str:
    """The best-value marker's legend: "best" in the metric's declared direction (a lowest distance is no peak)."""
    return f"best ({'lowest' if metric.better == 'min' else 'highest'}) {best:.3f} at {axis} {at}"


def edit_bokeh(change) -> None:
    """Make raw Bokeh model changes (`change()`) on the current session: on its next tick, under its document lock,
    and sent in order with the page's own (Panel) updates. Panel may hold an update back while the socket is busy
    and send it a moment later; a change sent through Bokeh's own path in that moment overtook it, and the browser
    then met a reference to a figure it had not yet received ("reference ... isn't known"). Outside a server
    (a notebook, a test) the change is made at once."""
    import panel as pn
    from panel.io.document import unlocked

    def run():
        with unlocked():  # Panel's dispatch: queued behind any update it holds back
            change()
    pn.state.execute(run, schedule=True)


class LiveCurves:
    """A study's curve groups while a run trains: Bokeh figures fed by one ColumnDataSource that new rows are
    streamed into. A new point costs the server one small message and no redraw; a HoloViews DynamicMap over a
    Buffer would rebuild every figure (~0.15 s each) on the event loop that every browser session shares.
    A reference run (the previous run, or the default dials' stored one) can be drawn faded beneath."""

    def __init__(self, cls):
        from bokeh.models import ColumnDataSource, LegendItem, SaveTool, Span, Title
        from bokeh.plotting import figure

        self.cls, axis = cls, cls.axis
        self.columns = list(dict.fromkeys([axis] + [m for ms in cls.curves.values() for m in ms]))
        self.source = ColumnDataSource({c: [] for c in self.columns})
        self.reference = ColumnDataSource({c: [] for c in self.columns})
        self.reference_name = ""  # what the faded curves are ('' : none)
        self.rows, self._sent = 0, []  # rows sent so far (the source itself fills on the session's next tick)
        self.measured: set[str] = set()  # metrics with a finite value among the rows sent
        self.figures, self._peaks, self._reference_items = [], [], []
        peak_metric = cls.headline
        for title, metrics in cls.curves.items():
            fig = figure(title=title, height=340, min_width=320, sizing_mode="stretch_width", x_axis_label=axis,
                         y_axis_label=axis_label(title), toolbar_location="above",
                         tools=["pan", "wheel_zoom", "box_zoom", "reset", SaveTool(filename=f"{axis}_{title}".lower())])
            faded = []
            for i, m in enumerate(metrics):  # the reference first, so the run's own curves draw over it
                color = PALETTE[i % len(PALETTE)]
                faded.append(fig.line(axis, m, source=self.reference, color=color, line_width=2, alpha=0.3,
                                      line_dash="dashed"))
                faded.append(fig.scatter(axis, m, source=self.reference, color=color, size=3, alpha=0.3))
            for i, m in enumerate(metrics):
                fig.line(axis, m, source=self.source, color=PALETTE[i % len(PALETTE)], line_width=2,
                         legend_label=cls.label(m))
                # points too: a metric measured only now and then (spectra snapshots, nan between) has no segments
                fig.scatter(axis, m, source=self.source, color=PALETTE[i % len(PALETTE)], size=4,
                            legend_label=cls.label(m))
            if peak_metric in metrics:
                span = Span(dimension="height", line_dash="dashed", line_color="gray", line_width=1, visible=False)
                marker = ColumnDataSource({"x": [], "y": []})
                fig.add_layout(span)
                fig.scatter("x", "y", source=marker, marker="triangle", size=9, color="black", legend_label="best")
                self._peaks.append((span, marker, fig.legend.items[-1]))
            legend = fig.legend[0]  # below the plot, not over the curves
            legend.items.append(LegendItem(label="", renderers=faded, visible=False))  # says what the faded are
            self._reference_items.append(legend.items[-1])
            fig.center.remove(legend)
            legend.orientation, legend.location = "horizontal", "center"
            if len(legend.items) > 2:  # two to a row: a long row would widen the figure past half the page
                legend.nrows = -(-len(legend.items) // 2)
            fig.add_layout(legend, "below")
            head = axis_label(title, 45)
            if head != title:  # a long title in two lines, or half a page cuts it off: the name, then its aside
                aside = title[len(head):].strip(" :,")
                aside = aside[1:-1] if aside.startswith("(") and aside.endswith(")") else aside
                fig.title.text = head
                fig.add_layout(Title(text=aside, text_font_size="9pt", text_font_style="italic"), "above")  # below it
            self.figures.append(fig)

    def set_reference(self, rows: pd.DataFrame | None, name: str = "") -> None:
        """Draw `rows` (a run's curves) faded beneath the live ones, named `name` in the legends; None: none."""
        from bokeh.core.properties import value

        if rows is None or not len(rows):
            rows, name = pd.DataFrame(columns=self.columns), ""
        rows = rows.reindex(columns=self.columns)
        data = {c: rows[c].to_numpy(dtype=np.int64 if c == self.cls.axis else float) for c in self.columns}
        self.reference_name = name

        def show():
            self.reference.data = data
            for item in self._reference_items:
                item.label, item.visible = value(f"dashed: {name}"), bool(name)
        edit_bokeh(show)

    @property
    def data(self) -> pd.DataFrame:
        """The rows sent so far (the source in the browser lags a tick behind)."""
        if not self._sent:
            return pd.DataFrame(columns=self.columns)
        return pd.concat(self._sent, ignore_index=True)

    def clear(self) -> None:
        def clear():
            self.source.data = {c: [] for c in self.columns}
            for span, marker, _ in self._peaks:
                span.visible = False
                marker.data = {"x": [], "y": []}
        self.rows, self._sent = 0, []
        self.measured = set()
        edit_bokeh(clear)

    def send(self, rows: pd.DataFrame) -> None:
        """Append rows (a column per metric; missing ones are gaps) and move the peak marker."""
        rows = rows.reindex(columns=self.columns)
        new = {c: rows[c].to_numpy(dtype=np.int64 if c == self.cls.axis else float) for c in self.columns}

        def send():
            self.source.stream(new)
            self._move_peak()
        self.rows += len(rows)
        self._sent.append(rows)
        self.measured |= {c for c in self.columns[1:] if np.isfinite(new[c]).any()}
        edit_bokeh(send)

    def shown(self) -> list[bool]:
        """Which figures have anything to draw: a panel whose metrics were never measured (spectra without
        `spectra_every`) is hidden rather than left blank."""
        return [any(m in self.measured for m in ms) for ms in self.cls.curves.values()]

    def _move_peak(self) -> None:
        from bokeh.core.properties import value

        head = self.cls.metric(self.cls.headline)
        if not self._peaks or head.name not in self.source.data:
            return
        values = np.asarray(self.source.data[head.name], dtype=float)
        i = head.best_index(values)
        if i is None:
            return
        at, best = int(self.source.data[self.cls.axis][i]), float(values[i])
        for span, marker, item in self._peaks:
            span.location, span.visible = at, True
            marker.data = {"x": [at], "y": [best]}
            item.label = value(best_label(head, best, self.cls.axis, at))


def headline_svg(ds: xr.Dataset, width: int = 380, height: int = 120) -> str:
    """A run's headline metric over its axis as a small static SVG (an index card's figure: no JavaScript, no
    server round trip): the curve, its best point, the value range and the metric's label."""
    import html

    cls = get_study(ds.attrs.get("study", "label_noise"))
    head, axis = cls.metric(cls.headline), cls.axis
    df = frame(ds, axis)
    if head.name not in df:
        raise KeyError(f"the run stores no {head.name!r}")
    df = df[[axis, head.name]].dropna()
    if not len(df):
        raise ValueError(f"the run's {head.name!r} is never finite")
    x, y = df[axis].to_numpy(float), df[head.name].to_numpy(float)
    left, right, top, bottom = 46, 8, 22, 18  # margins: value labels left, axis labels below
    x0, x1 = float(x.min()), float(x.max()) if x.max() > x.min() else float(x.min()) + 1
    y0, y1 = float(y.min()), float(y.max())
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    px = left + (x - x0) / (x1 - x0) * (width - left - right)
    py = top + (y1 - y) / (y1 - y0) * (height - top - bottom)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
    i = head.best_index(y)
    best = (f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="3.5" fill="black"><title>best {y[i]:.3g} at {axis} '
            f'{int(x[i])}</title></circle>') if i is not None else ""
    font = 'font-family="sans-serif"'
    text = f'{font} font-size="10" fill="#555"'
    name = html.escape(f"{cls.label(head.name)} over {axis}s")
    return (f'<svg class="wb-card-figure" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="{name}">'
            f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
            f'fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{left}" y="13" {font} font-size="11" fill="#333">{name}</text>'
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" {text}>{y1:.3g}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" {text}>{y0:.3g}</text>'
            f'<text x="{left}" y="{height - 5}" {text}>{int(x0)}</text>'
            f'<text x="{width - right}" y="{height - 5}" text-anchor="end" {text}>{int(x1)}</text>'
            f'<polyline points="{points}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>{best}</svg>')


def curves(run_or_ds, logx: bool = False, logy: bool = False) -> hv.Layout:
    """All of the study's curve groups for one run (loss, accuracy, ...), peak marked."""
    ds, cls = _resolve(run_or_ds)
    df = frame(ds, cls.axis)
    measured = {t: ms for t, ms in cls.curves.items() if any(m in df and df[m].notna().any() for m in ms)}
    return hv.Layout([group_plot(df, cls, t, ms, logx, logy)
                      for t, ms in (measured or cls.curves).items()]).cols(3)


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
    """Curves plus the run's own figures (per-example loss histogram, samples)."""
    ds, _ = _resolve(run_or_ds)
    more = extras(ds)
    return (curves(ds) + more).cols(3) if more is not None else curves(ds)


def extras(run_or_ds) -> hv.Layout | None:
    """A run's figures beyond its curves (what a study page adds below the live curves once the run ends)."""
    ds, _ = _resolve(run_or_ds)
    samples = masked_diffusion_plots if "level_hist" in ds else diffusion_plots
    figs = [draw(ds) for key, draw in (("example_loss", loss_histogram), ("samples", samples)) if key in ds]
    if len(figs) > 1:
        return (figs[0] + figs[1]).cols(3)
    return figs[0] if figs else None


def image_grid(flat: np.ndarray, side: int, n: int = 8) -> np.ndarray:
    """The first n×n flat images (rows of side² values) tiled into one (n·(side+1) − 1)² picture, 1-pixel gaps."""
    count = min(n * n, len(flat))
    cols = min(n, count)
    rows = -(-count // cols)
    grid = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for i in range(count):
        r, c = divmod(i, cols)
        grid[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            flat[i].reshape(side, side)
    return grid


def samples_plot(pts: np.ndarray, title: str = "samples", classes: np.ndarray | None = None):
    """Samples (n, d): a scatter for 2-D points (coloured by the class each was asked for, a class-conditional
    model's), a grid of the first 64 images for square images (in the order asked: classes in turn)."""
    if pts.shape[-1] == 2:
        if classes is not None:
            return hv.Scatter((pts[:, 0], pts[:, 1], classes), "x₁", ["x₂", "class asked for"]).opts(
                color="class asked for", cmap=PALETTE[:int(classes.max()) + 1], colorbar=True, size=3, alpha=0.6,
                title=f"{title}, coloured by the class asked for", height=300, responsive=True)
        return hv.Scatter((pts[:, 0], pts[:, 1]), "x₁", "x₂").opts(
            size=2, alpha=0.4, color=PALETTE[0], title=title, height=300, responsive=True)
    side = int(round(pts.shape[-1] ** 0.5))
    grid = image_grid(pts, side)
    return hv.Image(np.flipud(grid), bounds=(0, 0, grid.shape[1], grid.shape[0])).opts(
        cmap="gray", clim=(-1, 1), xaxis=None, yaxis=None, title=f"{title} ({side}×{side})", height=300,
        responsive=True)


def log_ticks(*arrays) -> list[float] | None:
    """Ticks 1, 2, 5 × 10^k over the positive values' range, for a log axis: Bokeh's own crowd the top of an axis
    that spans a decade or two (0.3, 0.4, 0.5, 0.6 on top of each other); only the decades past three of them.
    Ticks a little past the values are kept for the axis' padding; None (Bokeh's own) where fewer than two fall
    within the values: a range narrower than 1 to 2."""
    v = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return None
    lo, hi = int(np.floor(np.log10(v.min()))), int(np.ceil(np.log10(v.max())))
    steps = (1,) if hi - lo > 3 else (1, 2, 5)
    ticks = [t for t in (m * 10.0 ** e for e in range(lo - 1, hi + 1) for m in steps)
             if v.min() / 2 <= t <= 2 * v.max()]
    return ticks if sum(v.min() <= t <= v.max() for t in ticks) >= 2 else None


def masked_diffusion_plots(run_or_ds, model: int = 0) -> hv.Layout:
    """A masked diffusion run: its last samples (an image grid) and how often each grey level is drawn, against
    the held-out images' levels (a sampler at too low a temperature starves the rare levels)."""
    ds, _ = _resolve(run_or_ds)
    pick = (lambda da: da.isel(model=model)) if "model" in ds.dims else (lambda da: da)  # noqa: E731
    levels = ds["level"].values
    grey = levels / max(len(levels) - 1, 1) * 2 - 1
    data, drawn = pick(ds["level_hist_data"]).values, pick(ds["level_hist"]).values
    hist = (hv.Curve((grey, data), "grey level", "share of pixels", label="held-out images")
            .opts(color="gray", line_dash="dashed", interpolation="steps-mid") *
            hv.Curve((grey, drawn), "grey level", "share of pixels", label="samples")
            .opts(color=PALETTE[1], interpolation="steps-mid"))
    return (samples_plot(pick(ds["samples"]).values) +
            hist.opts(logy=True, yticks=log_ticks(data, drawn), title="grey levels drawn (log scale)",
                      legend_position="right", show_grid=True, height=300, responsive=True)).cols(2)


def power_spectrum_plot(run_or_ds, model: int = 0) -> hv.Overlay:
    """A diffusion run's radially averaged power spectrum of its samples against the data's (log power)."""
    ds, _ = _resolve(run_or_ds)
    pick = (lambda da: da.isel(model=model)) if "model" in ds.dims else (lambda da: da)  # noqa: E731
    r = ds["radius"].values
    return (hv.Curve((r, pick(ds["power_data"]).values), "radius |k|", "power", label="data")
            .opts(color="gray", line_dash="dashed") *
            hv.Curve((r, pick(ds["power_samples"]).values), "radius |k|", "power", label="samples")
            .opts(color=PALETTE[1])).opts(logy=True, title="radially averaged power spectrum", show_grid=True,
                                          height=300, responsive=True)


def diffusion_plots(run_or_ds, model: int = 0) -> hv.Layout:
    """A diffusion run: its last samples (scatter for 2-D data, an image grid for images), sample quality against
    the number of sampling steps, the schedule's logSNR(t), the training loss per t-bin and, where kept, the
    brightness histogram and power spectrum (samples against data) and the nearest-training distances."""
    ds, _ = _resolve(run_or_ds)
    pick = (lambda da: da.isel(model=model)) if "model" in ds.dims else (lambda da: da)  # noqa: E731
    panel = dict(height=300, responsive=True)
    items = [samples_plot(pick(ds["samples"]).values,
                          classes=pick(ds["sample_class"]).values if "sample_class" in ds else None)]
    if "sw_vs_steps" in ds:
        sw = pick(ds["sw_vs_steps"])
        steps = sw["sampling_steps"].values
        items.append(hv.Curve((steps, sw.values), "sampling steps", "sliced Wasserstein")
                     .opts(logx=True, logy=True, xticks=[(int(n), str(int(n))) for n in steps],
                           yticks=log_ticks(sw.values), color=PALETTE[1], padding=0.05,
                           title="sample quality against sampling steps", show_grid=True, **panel))
    if "best_of_log_density" in ds:  # inference-time search over initial noise
        m = ds["candidates"].values
        score = hv.Curve((m, pick(ds["best_of_log_density"]).values), "candidates per sample (M)",
                         "verifier: mean log-density", label="verifier score").opts(color=PALETTE[2])
        dist = hv.Curve((m, pick(ds["best_of_sw"]).values), "candidates per sample (M)", "sliced Wasserstein",
                        label="sliced W. to held-out data").opts(color=PALETTE[1])
        items.append(score.opts(logx=True, title="best of M initial noises: the verifier's score", show_grid=True,
                                **panel))
        items.append(dist.opts(logx=True, title="best of M initial noises: distance to the data", show_grid=True,
                               **panel))
    params = ds.attrs.get("config")
    if params:
        p = json.loads(params) if isinstance(params, str) else params
        items.append(schedule_curves(p).opts(title=f"schedule {p['schedule']}", show_grid=True, **panel))
    if "loss_by_t" in ds:
        lt = pick(ds["loss_by_t"])
        items.append(hv.Curve((lt["t_bin"].values, lt.values), "t", "training loss")
                     .opts(color=PALETTE[3], logy=True, title="training loss by t (last interval)",
                           show_grid=True, **panel))
    if "brightness_hist" in ds:
        x = ds["brightness"].values
        items.append((hv.Curve((x, pick(ds["brightness_hist_data"]).values), "mean brightness", "density",
                               label="data").opts(color="gray", line_dash="dashed") *
                      hv.Curve((x, pick(ds["brightness_hist"]).values), "mean brightness", "density",
                               label="samples").opts(color=PALETTE[0]) *
                      (hv.Curve((x, pick(ds["brightness_hist_oms"]).values), "mean brightness", "density",
                                label="One More Step").opts(color=PALETTE[2])
                       if "brightness_hist_oms" in ds else hv.Curve([], "mean brightness", "density")))
                     .opts(title="per-image mean brightness", show_grid=True, **panel))
    if "power_samples" in ds:
        items.append(power_spectrum_plot(ds, model))
    if "nearest_train" in ds:
        near, held = pick(ds["nearest_train"]).values, pick(ds["nearest_train_heldout"]).values
        edges = np.linspace(0, np.nanquantile(np.concatenate([near, held]), 0.99) + 1e-9, 31)
        items.append((hv.Histogram(np.histogram(held, edges, density=True), kdims="distance", vdims="density",
                                   label="held-out data").opts(alpha=0.4, color="gray") *
                      hv.Histogram(np.histogram(near[np.isfinite(near)], edges, density=True), kdims="distance",
                                   vdims="density", label="samples").opts(alpha=0.5, color=PALETTE[4]))
                     .opts(title="distance to the nearest training example (memorization: samples pile up at 0)",
                           **panel))
    return hv.Layout(items).cols(3)


REDUCTIONS = ("final", "best", "peak_minus_final")


def reduce_axis(da: xr.DataArray, axis: str, epoch="final", better: str = "none") -> xr.DataArray:
    """One value per cell from a curve: its final value, its best (in the metric's declared direction `better`),
    the best minus the final value (the size of an early-learning drop), or the value at a given step of `axis`."""
    if epoch == "final":
        return da.isel({axis: -1})
    if epoch in ("best", "peak_minus_final"):
        if better not in ("min", "max"):
            raise ValueError(f"epoch={epoch!r} is not allowed for {da.name!r}, which has no better direction "
                             "(declared better='none'): final or an integer step")
        best = da.min(axis) if better == "min" else da.max(axis)
        return best if epoch == "best" else best - da.isel({axis: -1})
    if isinstance(epoch, (int, np.integer)):
        return da.sel({axis: int(epoch)})
    raise ValueError(f"epoch={epoch!r} is not allowed: one of {', '.join(REDUCTIONS)} or an integer {axis}")


def cell_table(ds: xr.Dataset, metric: str, x: str, y: str, epoch="final") -> pd.DataFrame:
    """Per (x, y) cell: mean, std and n over seeds (other swept dims averaged) of the reduced metric."""
    cls = get_study(ds.attrs.get("study", "label_noise"))
    if metric not in ds:
        raise ValueError(f"metric={metric!r} is not allowed: one of {', '.join(n for n in ds.data_vars)}")
    for name, dim in (("x", x), ("y", y)):
        if dim not in ds[metric].dims:
            raise ValueError(f"{name}={dim!r} is not allowed: a swept dim of {metric}: {', '.join(ds[metric].dims)}")
    da = reduce_axis(ds[metric], cls.axis, epoch, cls.better(metric)) if cls.axis in ds[metric].dims else ds[metric]
    extra = [d for d in da.dims if d not in (x, y, "seed")]
    if extra:
        da = da.mean(extra)
    if "seed" not in da.dims:
        da = da.expand_dims(seed=[0])
    df = stats.over(da, "seed").to_dataframe().reset_index()
    return df[[x, y, "mean", "std", "n", "lo", "hi"]]


def phase_diagram(ds: xr.Dataset, metric: str, x: str, y: str, epoch="final", cmap: str = "viridis") -> hv.Overlay:
    """A metric over two swept dials, each cell the mean over seeds (hover: spread and n); other dials averaged."""
    order = (list(ds[x].values), list(ds[y].values))
    return heatmap(cell_table(ds, metric, x, y, epoch), metric, x, y, epoch, cmap, order,
                   cls=get_study(ds.attrs.get("study", "label_noise")))


def _tick(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def heatmap(df: pd.DataFrame, metric: str, x: str, y: str, epoch="final", cmap: str = "viridis",
            order: tuple | None = None, clim: tuple | None = None, cls=None):
    """A phase diagram from a cell table (columns x, y, mean, std, n), as the app fills it live: each cell coloured
    by its mean and labelled with it. The axes are categorical, in the grid's own order (`order`: the x values and
    the y values); `clim` fixes the colour range (a filling diagram would otherwise rescale with every cell)."""
    df = df.copy()
    xs, ys = order if order is not None else (sorted(df[x].unique()), sorted(df[y].unique()))
    df["_x"], df["_y"] = df[x].map(_tick), df[y].map(_tick)
    text = label(metric, cls)
    title = f"{text} ({epoch if isinstance(epoch, str) else f'epoch {epoch}'}), mean over seeds"
    kdims = [hv.Dimension("_x", label=x, values=[_tick(v) for v in xs]),
             hv.Dimension("_y", label=y, values=[_tick(v) for v in ys])]
    opts = dict(clim=clim) if clim is not None and all(np.isfinite(clim)) else {}
    heat = hv.HeatMap(df[["_x", "_y", "mean", "std", "n"]], kdims=kdims, vdims=[("mean", text), "std", "n"]).opts(
        cmap=cmap, colorbar=True, tools=["hover", "tap"], title=title, responsive=True, height=360,
        line_color="white", line_width=1, framewise=True, nonselection_alpha=0.8, **opts)
    shown = df[np.isfinite(df["mean"].astype(float))]
    cells = hv.Labels((shown["_x"], shown["_y"], [f"{v:.3g}" for v in shown["mean"]]), kdims, "value").opts(
        text_color="white", text_font_size="10pt")
    return heat * cells


def sweep_curves(ds: xr.Dataset, metric: str, cell: dict) -> hv.Overlay:
    """The curves of one cell of a sweep: one faint line per seed and their mean."""
    cls = get_study(ds.attrs.get("study", "label_noise"))
    da = ds[metric].sel(cell)
    extra = [d for d in da.dims if d not in (cls.axis, "seed")]
    if extra:
        da = da.mean(extra)
    seeds = da["seed"].values if "seed" in da.dims else [None]
    lines = [hv.Curve((da[cls.axis].values, (da.sel(seed=s) if s is not None else da).values), cls.axis, metric)
             .opts(color="gray", alpha=0.4, line_width=1) for s in seeds]
    mean = da.mean("seed") if "seed" in da.dims else da
    lines.append(hv.Curve((mean[cls.axis].values, mean.values), cls.axis, metric, label="mean over seeds")
                 .opts(color=PALETTE[0], line_width=2))
    where = ", ".join(f"{k}={v}" for k, v in cell.items())
    return hv.Overlay(lines).opts(title=f"{label(metric, cls)} at {where}", responsive=True, height=300,
                                  show_grid=True)


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of log y = a log x + log c over the positive, finite points; returns (a, c)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    a, logc = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(a), float(np.exp(logc))


def power_law(ds: xr.Dataset, metric: str, x: str, by: str | None = None, epoch="final") -> hv.Overlay:
    """`metric` against the swept dial `x` on log-log axes, one series per value of `by`, each with its fitted
    power law y = c·x^a (the exponent in the legend); seeds averaged, other dims averaged."""
    cls = get_study(ds.attrs.get("study", "label_noise"))
    da = reduce_axis(ds[metric], cls.axis, epoch, cls.better(metric)) if cls.axis in ds[metric].dims else ds[metric]
    keep = [x] + ([by] if by else [])
    da = da.mean([d for d in da.dims if d not in keep])
    groups = list(da[by].values) if by else [None]
    items = []
    for i, g in enumerate(groups):
        series = da.sel({by: g}) if by else da
        xs, ys = series[x].values.astype(float), series.values.astype(float)
        a, c = fit_power_law(xs, ys)
        color = PALETTE[i % len(PALETTE)]
        name = f"{by}={_tick(g)}" if by else metric
        items.append(hv.Scatter((xs, ys), x, metric, label=f"{name}: exponent {a:.2f}").opts(color=color, size=8))
        if np.isfinite(a):
            grid = np.geomspace(xs[xs > 0].min(), xs.max(), 50)
            items.append(hv.Curve((grid, c * grid**a), x, metric).opts(color=color, line_dash="dashed"))
    return hv.Overlay(items).opts(logx=True, logy=True, responsive=True, height=320, show_grid=True,
                                  legend_position="bottom_right", title=f"{label(metric, cls)} vs {x}")


def crossover(ds: xr.Dataset, metric: str, x: str, by: str, epoch="final", factor: float = 2.0) -> pd.DataFrame:
    """The crossover value of the dial `x` (e.g. the temperature T_c) for each value of `by` (e.g. P): the first x at
    which the metric, averaged over seeds, has moved by `factor` (up or down) from its value at the smallest x,
    interpolated linearly in log-log. A table: by, crossover (nan where it never moves that far)."""
    cls = get_study(ds.attrs.get("study", "label_noise"))
    da = reduce_axis(ds[metric], cls.axis, epoch, cls.better(metric)) if cls.axis in ds[metric].dims else ds[metric]
    da = da.mean([d for d in da.dims if d not in (x, by)]).transpose(by, x)
    da = da.isel({x: np.nonzero(da[x].values.astype(float) > 0)[0]})  # a log axis: positive x only
    xs = np.log(da[x].values.astype(float))
    rows = []
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = np.abs(np.log(np.abs(da.values.astype(float)) / np.abs(da.values[:, :1].astype(float))))
    for b, series in zip(da[by].values, moved - np.log(factor)):
        above = np.nonzero(series >= 0)[0]
        if not len(above) or above[0] == 0 or not np.isfinite(series[:above[0] + 1]).all():
            rows.append({by: b, "crossover": np.nan})
            continue
        i = above[0] - 1
        t = -series[i] / (series[i + 1] - series[i])
        rows.append({by: b, "crossover": float(np.exp(xs[i] + t * (xs[i + 1] - xs[i])))})
    return pd.DataFrame(rows)


def crossover_plot(ds: xr.Dataset, metric: str, x: str, by: str, epoch="final") -> hv.Overlay:
    """The crossover of `x` against `by` on log-log axes with its fitted power law (Sclocchi et al.'s T_c ∝ P^-b)."""
    table = crossover(ds, metric, x, by, epoch)
    a, c = fit_power_law(table[by], table["crossover"])
    points = hv.Scatter(table, by, ("crossover", f"crossover {x}"), label=f"fit: exponent {a:.2f}").opts(
        size=9, color=PALETTE[0])
    items = [points]
    if np.isfinite(a):
        grid = np.geomspace(table[by].min(), table[by].max(), 50)
        items.append(hv.Curve((grid, c * grid**a), by, ("crossover", f"crossover {x}")).opts(
            color=PALETTE[0], line_dash="dashed"))
    return hv.Overlay(items).opts(logx=True, logy=True, responsive=True, height=320, show_grid=True,
                                  title=f"crossover {x} (from {label(metric)}) vs {by}")


def curves_by(ds: xr.Dataset, metric: str, by: str, **select) -> hv.Overlay:
    """A sweep's mean curve of `metric` for each value of the swept dial `by` (e.g. loss curves by format); the
    other swept dials fixed by `select` or averaged, with the seeds' spread as a band."""
    cls = get_study(ds.attrs.get("study", "label_noise"))
    da = ds[metric].sel(select) if select else ds[metric]
    extra = [d for d in da.dims if d not in (cls.axis, by, "seed")]
    if extra:
        da = da.mean(extra)
    items = []
    for i, v in enumerate(da[by].values):
        one = da.sel({by: v})
        mean = one.mean("seed") if "seed" in one.dims else one
        color = PALETTE[i % len(PALETTE)]
        if "seed" in one.dims and one.sizes["seed"] > 1:
            std = one.std("seed")
            items.append(hv.Area((mean[cls.axis].values, (mean - std).values, (mean + std).values), cls.axis,
                                 [metric, "upper"]).opts(color=color, alpha=0.15, line_alpha=0))
        items.append(hv.Curve((mean[cls.axis].values, mean.values), cls.axis, metric, label=f"{by}={_tick(v)}")
                     .opts(color=color, line_width=2))
    return hv.Overlay(items).opts(title=f"{label(metric, cls)} by {by} (mean ± std over seeds)",
                                  responsive=True, height=320, show_grid=True, legend_position="right",
                                  logy=cls.better(metric) == "min" and bool((da > 0).all()))


def sqnr_heatmap(lab_ds: xr.Dataset, title: str = "SQNR by format and tensor (dB, higher is better)") -> hv.HeatMap:
    """The quantization-error lab's table: formats (rows) × tensors (columns), annotated (without dither)."""
    da = lab_ds["sqnr"]
    if "dither" in da.dims:
        da = da.sel(dither=0.0)
    df = da.to_dataframe().reset_index()
    kdims = [hv.Dimension("tensor", values=list(lab_ds["tensor"].values)),
             hv.Dimension("format", values=list(lab_ds["format"].values)[::-1])]
    heat = hv.HeatMap(df[["tensor", "format", "sqnr"]], kdims=kdims, vdims=[("sqnr", "SQNR (dB)")]).opts(
        cmap="viridis", colorbar=True, tools=["hover"], title=title, responsive=True, height=380)
    labels = hv.Labels(df.assign(text=df["sqnr"].round(1).astype(str)), kdims=kdims, vdims=["text"]).opts(
        text_color="white", text_font_size="8pt")
    return heat * labels


def fourier_spectrum(run_or_ds, model: int | None = None) -> hv.HoloMap:
    """Grokking: the power of the token embeddings at each frequency, one frame per measured epoch (a slider);
    a grokked net concentrates it in a few key frequencies."""
    ds, cls = _resolve(run_or_ds)
    power = ds["fourier_power"]
    if "model" in power.dims:
        power = power.isel(model=model or 0)
    extra = [d for d in power.dims if d not in ("snapshot", "frequency")]
    if extra:
        power = power.isel({d: 0 for d in extra})
    frames = {int(ep): hv.Bars((power["frequency"].values[1:], power.sel(snapshot=ep).values[1:]), "frequency",
                               "power").opts(title=f"embedding Fourier power, {cls.axis} {int(ep)}", responsive=True,
                                             height=300, color=PALETTE[0], framewise=True)
              for ep in power["snapshot"].values}
    return hv.HoloMap(frames, kdims=[hv.Dimension("snapshot", label=f"snapshot {cls.axis}")])


def spectra_plot(run_or_ds, model: int = 0) -> hv.Layout:
    """What a run stored of its spectra: the Hessian's eigenvalue density (SLQ) with its top eigenvalues, a layer's
    weight spectrum against the Marchenko–Pastur law of its shape, the hidden features' covariance spectrum."""
    from ..probes import spectra as sp

    ds, cls = _resolve(run_or_ds)

    def one(name):
        da = ds[name]
        if "model" in da.dims:
            da = da.isel(model=model)
        if "spectrum_snapshot" in da.dims:  # snapshots over training: the last one
            da = da.isel(spectrum_snapshot=-1)
        rest = [d for d in da.dims if d not in ("density_point", "weight_eigen", "feature_eigen", "eigen_index")]
        return da.isel({d: 0 for d in rest}).values

    snaps = ds["spectrum_snapshot"].values if "spectrum_snapshot" in ds.coords else np.array([])
    at = f" at {cls.axis} {int(snaps[-1])}" if len(snaps) else ""

    def summary(name) -> float:
        """A scalar summary (a curve over the axis, nan between snapshots) at the snapshot drawn, the last."""
        if name not in ds:
            return float("nan")
        da = ds[name].isel(model=model) if "model" in ds[name].dims else ds[name]
        if cls.axis not in da.dims:
            return float(one(name))
        if len(snaps) and snaps[-1] in da[cls.axis].values:
            return float(da.sel({cls.axis: snaps[-1]}))
        finite = da.values[np.isfinite(da.values)]
        return float(finite[-1]) if len(finite) else float("nan")

    panels = []
    if "hessian_density" in ds:
        grid, dens, top = one("hessian_density_grid"), one("hessian_density"), one("hessian_top")
        # six decades below the peak on the log axis; the kernels' far tails (1e-60) are no information
        peak = float(np.nanmax(dens)) if np.isfinite(dens).any() and np.nanmax(dens) > 0 else 1.0
        dens = np.where(dens >= peak * 1e-6, dens, np.nan)
        panels.append((hv.Curve((grid, dens), "eigenvalue", "density").opts(color=PALETTE[0])
                       * hv.Spikes(top, "eigenvalue").opts(color=PALETTE[1], line_width=2))
                      .opts(title="Hessian eigenvalue density (SLQ), top 5 in red", logy=True, responsive=True,
                            height=300, show_grid=True, ylim=(peak * 1e-6, peak * 2)))
    if "weight_eigenvalues" in ds:
        ev = one("weight_eigenvalues")
        counts, edges = np.histogram(ev, bins=40, density=True)
        hist = hv.Histogram((edges, counts), kdims=["eigenvalue of WᵀW/N"], vdims=["density"]).opts(
            color=PALETTE[0], alpha=0.6)
        sigma2 = float(np.mean(ev))  # the ESD's mean is σ² for the MP law of the same shape
        alpha = summary("weight_alpha")
        lam, rho = sp.marchenko_pastur(int(round(len(ev) / float(one("weight_q")))), len(ev), sigma2)
        panels.append((hist * hv.Curve((lam, rho), "eigenvalue of WᵀW/N", "density", label="Marchenko–Pastur")
                       .opts(color=PALETTE[1])).opts(title=f"weight spectrum{at} (tail power law α = {alpha:.2f})",
                                                     responsive=True, height=300, show_grid=True))
    if "feature_eigenvalues" in ds:
        ev = one("feature_eigenvalues")
        ev = ev[ev > 0]
        rank = summary("feature_effective_rank")
        panels.append(hv.Curve((np.arange(1, len(ev) + 1), ev), "index", "covariance eigenvalue")
                      .opts(logx=True, logy=True, color=PALETTE[2], title=f"hidden features{at} (effective rank {rank:.1f})",
                            responsive=True, height=300, show_grid=True))
    return hv.Layout(panels or [hv.Curve([])]).cols(3)


def spectra_views(run_or_ds) -> list:
    """Every spectrum a run stored, as plots (empty when it stored none)."""
    ds, _ = _resolve(run_or_ds)
    views = []
    if any(n in ds for n in ("hessian_density", "weight_eigenvalues", "feature_eigenvalues")):
        views.append(spectra_plot(ds))
    if "fourier_power" in ds:
        views.append(fourier_spectrum(ds))
    if "power_samples" in ds:
        views.append(power_spectrum_plot(ds))
    return views


def schedules_plot(names=None, clip: float = 20.0) -> hv.Overlay:
    """logSNR(t) of diffusion schedules (default: every one, at its paper's parameters), clipped to ±clip."""
    from ..noise import schedules

    t = np.linspace(0, 1, 401)
    curves = [hv.Curve((t, np.clip(schedules.get(n).logsnr(t).numpy(), -clip, clip)), "t", "logSNR", label=n)
              .opts(color=PALETTE[i % len(PALETTE)], line_width=2)
              for i, n in enumerate(names or schedules.NAMES)]
    return hv.Overlay(curves).opts(hv.opts.Overlay(title=f"logSNR(t), clipped to ±{clip:g}", legend_position="right",
                                                   responsive=True, height=350, show_grid=True))


def schedule_curves(values: dict, clip: float = 20.0, visits: bool = False) -> hv.Overlay:
    """A diffusion run's schedules from its dials: the sampling schedule's logSNR(t), with the times its sampler
    visits (`visits`), and, where training draws its noise levels from a schedule of its own, that schedule's
    logSNR at u ~ U(0, 1) (dashed: the levels' quantiles), each clipped to ±clip."""
    from ..engine.diffusion import times
    from ..studies.diffusion import noise_schedules

    sch, train = noise_schedules(values)
    t = np.linspace(0, 1, 401)
    items = [hv.Curve((t, np.clip(sch.logsnr(t).numpy(), -clip, clip)), "t", f"logSNR (clipped to ±{clip:g})",
                      label=values["schedule"]).opts(color=PALETTE[0], line_width=2)]
    if train is not None:
        items.append(hv.Curve((t, np.clip(train.logsnr(t).numpy(), -clip, clip)), "t",
                              f"logSNR (clipped to ±{clip:g})", label=f"training: {values['train_schedule']}")
                     .opts(color=PALETTE[2], line_width=2, line_dash="dashed"))
    if visits:
        steps = times(sch, int(values.get("sample_steps", 50)), values.get("spacing", "trailing")).numpy()
        items.append(hv.Scatter((steps, np.clip(sch.logsnr(steps).numpy(), -clip, clip)), "t",
                                f"logSNR (clipped to ±{clip:g})", label=f"{len(steps) - 1} sampling steps")
                     .opts(color=PALETTE[1], size=5))
    return hv.Overlay(items).opts(legend_position="top_right")


def schedule_preview(values: dict) -> hv.Overlay:
    """The diffusion page's live preview: the chosen schedule's logSNR(t), the times its sampler will visit, and
    the training schedule where it has its own."""
    return schedule_curves(values, visits=True).opts(
        title="schedule: logSNR(t), clipped to ±20; dots: the sampler's times", responsive=True, height=260,
        show_grid=True)


#: live previews on a study page: {study: (the dials they depend on, values -> plot)}
PREVIEWS = {"diffusion": (("schedule", "schedule_params", "input_scale", "train_schedule", "train_schedule_params",
                           "zero_terminal_snr", "sample_steps", "spacing"), schedule_preview)}


_PANEL_CSS = re.compile(r'\{"type":"object","name":"ImportedStyleSheet","id":"([^"]+)","attributes":\{"url":'
                        r'"https://cdn\.holoviz\.org/panel/[^/"]+/dist/([^"?]+)(?:\?[^"]*)?"\}\}')


_PANEL_ICON = re.compile(r'<link rel="[a-z -]*icon"[^>]*href="https://cdn\.holoviz\.org/[^"]*"[^>]*>')


def standalone_html(fig) -> str:
    """A figure as one HTML file that draws offline: BokehJS inline, and the Panel stylesheets its layout links
    from Panel's CDN (which `hv.save(resources="inline")` still does: a browser without the network logs an error
    for each) inlined from the installed Panel's own files; the CDN's page icons left out."""
    import panel

    buf = io.StringIO()
    hv.save(fig, buf, backend="bokeh", fmt="html", resources="inline")
    dist = Path(panel.__file__).parent / "dist"

    def inline(m: re.Match) -> str:
        path = dist / m.group(2)
        if not path.is_file():
            return m.group(0)
        css = json.dumps(path.read_text()).replace("</", "<\\/")  # inside a <script> element: no '</'
        return f'{{"type":"object","name":"InlineStyleSheet","id":"{m.group(1)}","attributes":{{"css":{css}}}}}'

    return _PANEL_ICON.sub("", _PANEL_CSS.sub(inline, buf.getvalue()))  # the page's icons: none, not the CDN's
