"""The run browser: the catalog's runs, filtered by study, status, tag and dial values; selected runs overlaid
(smoothing with the raw curve faded behind, log axes, a relative step axis); tag, delete, export.

The pure parts (`runs_frame`, `parse_dial_filter`, `smooth`, `overlay`, `curves_csv`, `netcdf_zip`) are what the
page calls; they are tested on their own.
"""
from __future__ import annotations

import html
import io
import json
import zipfile

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import xarray as xr

from ..errors import ConfigError, NotOwner, RunNotFound
from ..runs import Store
from ..runs.run import made_by_current_code
from ..runs.store import STATUSES, check_tags
from ..studies import get as get_study, names as study_names
from .markup import escape
from .owners import Visitor
from .plots import PALETTE, label, standalone_html

MAX_ROWS = 500  # newest runs listed


def parse_dial_filter(text: str) -> dict:
    """"width=64, flip_rate=0.2" -> {"width": 64, "flip_rate": 0.2} (values read as JSON where they parse)."""
    out = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError("dials", part, "comma-separated name=value pairs, e.g. width=64, flip_rate=0.2")
        try:
            out[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def curve_names(ds: xr.Dataset) -> list[str]:
    """The run's curves: variables along its study's axis alone, but the step counter (no metric)."""
    axis = get_study(ds.attrs.get("study", "label_noise")).axis
    return [n for n, v in ds.data_vars.items() if v.dims == (axis,) and n != "step"]


class Catalog:
    """Catalog rows and their datasets, read once (a stored run's file never changes; its tags live in the row)."""

    def __init__(self, store: Store | None = None):
        self.store = store or Store()
        self._datasets: dict[str, xr.Dataset] = {}
        self.describe_owner = Visitor().describe  # a page puts its own visitor's here

    def dataset(self, run_id: str) -> xr.Dataset:
        if run_id not in self._datasets:
            self._datasets[run_id] = self.store.load_dataset(run_id)
        return self._datasets[run_id]

    def forget(self, run_id: str) -> None:
        """Drop a run's dataset from the cache (it was deleted)."""
        self._datasets.pop(run_id, None)

    def rows(self, study: str = "all", statuses=(), tag: str = "", dials: str = "") -> list[dict]:
        wanted = parse_dial_filter(dials)
        return self.store.list(study=None if study == "all" else study, kind="run", tag=tag or None,
                               statuses=tuple(statuses), params=wanted, limit=MAX_ROWS)

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """One line a run: id, study, status, tags, finished, wall time, the dials away from their defaults, and
        the study's headline metric, best over the run and last."""
        out = []
        for r in rows:
            cls = get_study(r["study"]) if r["study"] in study_names() else None
            metric, best, last = "", np.nan, np.nan
            if cls is not None:
                head = cls.metric(cls.headline)
                metric = head.name
                try:
                    vals = self.dataset(r["id"])[metric].values.astype(float).ravel()
                    if np.isfinite(vals).any():
                        best = head.best(vals)
                        last = float(vals[np.isfinite(vals)][-1])
                except (RunNotFound, KeyError, OSError):
                    pass
            changed = " ".join(f"{k}={v}" for k, v in (cls.changed(r["params"]) if cls else r["params"]).items())
            out.append({"id": r["id"], "study": r["study"], "status": r["status"],
                        "owner": self.describe_owner(r.get("owner") or ""), "tags": ",".join(r["tags"]),
                        "finished": r["finished"], "wall_s": r["wall_s"],
                        "code": "current" if made_by_current_code(r) else "other", "dials": changed, "metric": metric,
                        "best": best, "last": last})
        cols = ["id", "study", "status", "owner", "tags", "finished", "wall_s", "code", "dials", "metric", "best", "last"]
        return pd.DataFrame(out, columns=cols)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with weight in [0, 1), debiased at the start;
    non-finite points are skipped (kept as they are)."""
    if not 0 <= weight < 1:
        raise ConfigError("smoothing", weight, "a number in [0, 1)")
    out = np.array(values, dtype=float)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(out):
        if not np.isfinite(v):
            continue
        acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


SEED_DIALS = ("seed", "data_seed", "noise_seed", "init_seed", "order_seed")


def overlay(datasets: dict[str, xr.Dataset], metric: str, smoothing: float = 0.0, logx: bool = False,
            logy: bool = False, relative: bool = False, labels: dict[str, dict] | None = None,
            by_seed: bool = False) -> hv.Overlay:
    """The metric of each run (id -> dataset) against its axis (or the fraction of the run, relative=True), the
    smoothed curve over the raw one faded behind. `labels` (id -> the dials set away from their defaults) name the
    curves by their dials; by_seed=True draws runs that differ only in their seeds as one mean line in a ± sd
    band (n in the legend). A ticked run that does not record the metric is named in the title."""
    labels = labels or {}
    owner = next((ds.attrs.get("study") for ds in datasets.values() if metric in ds), None)
    text = label(metric, get_study(owner) if owner in study_names() else None)  # the study's own label
    missing = [rid for rid, ds in datasets.items() if metric not in ds]
    curves = []  # (legend, x, y-per-run)
    groups: dict[str, list] = {}
    for rid, ds in datasets.items():
        if metric not in ds:
            continue
        axis = ds[metric].dims[0]
        x = ds[axis].values.astype(float)
        if relative and len(x) and x.max() > 0:
            x = x / x.max()
        y = smooth(ds[metric].values.astype(float), smoothing) if not by_seed else ds[metric].values.astype(float)
        dials = labels.get(rid, {})
        if by_seed:
            rest = {k: v for k, v in dials.items() if k not in SEED_DIALS}
            name = ", ".join(f"{k}={v}" for k, v in rest.items()) or "defaults"
            groups.setdefault(f"{ds.attrs.get('study', '')}|{name}|{axis}", []).append((name, x, y, ds[metric].values))
        else:
            name = ", ".join(f"{k}={v}" for k, v in dials.items()) or "defaults"
            curves.append((f"{name} ({rid[:6]})", x, y, ds[metric].values.astype(float), axis))
    layers = []
    xlabel = "fraction of the run" if relative else next(
        (ds[metric].dims[0] for ds in datasets.values() if metric in ds), "step")
    for i, (name, x, y, raw, _) in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        keep = x > 0 if logx else np.ones(len(x), bool)
        if smoothing > 0:
            layers.append(hv.Curve((x[keep], raw[keep]), xlabel, text).opts(color=color, alpha=0.25))
        layers.append(hv.Curve((x[keep], y[keep]), xlabel, text, label=name).opts(color=color, line_width=2))
    for i, members in enumerate(groups.values()):
        color = PALETTE[i % len(PALETTE)]
        n = min(len(m[1]) for m in members)  # runs of one group share their axis; cut to the shortest
        x = members[0][1][:n]
        ys = np.stack([m[2][:n] for m in members])
        with np.errstate(all="ignore"):
            mean = smooth(np.nanmean(ys, 0), smoothing)
            sd = np.nanstd(ys, 0, ddof=1) if len(members) > 1 else np.zeros(n)
        keep = (x > 0 if logx else np.ones(n, bool)) & np.isfinite(mean)
        layers.append(hv.Spread((x[keep], mean[keep], np.nan_to_num(sd[keep])), xlabel, [text, "sd"])
                      .opts(color=color, alpha=0.2, line_alpha=0))
        layers.append(hv.Curve((x[keep], mean[keep]), xlabel, text,
                               label=f"{members[0][0]} (mean ± sd, n={len(members)})").opts(color=color, line_width=2))
    note = f" — not recorded by {', '.join(r[:6] for r in missing)}" if missing else ""
    if not layers:
        return hv.Overlay([hv.Curve([], "step", metric)]).opts(
            title=f"select runs that have this metric{note}", responsive=True, height=380)
    return hv.Overlay(layers).opts(logx=logx, logy=logy, show_grid=True, responsive=True, height=380,
                                   title=text + note, legend_position="bottom",
                                   hooks=[png_name(f"runs_{metric}")])


def png_name(name: str):
    """A HoloViews hook: the plot's save tool writes `name`.png at once instead of asking for a file name."""
    def hook(plot, element):
        from bokeh.models import SaveTool

        for tool in plot.state.tools:
            if isinstance(tool, SaveTool):
                tool.filename = name
    return hook


def curves_csv(datasets: dict[str, xr.Dataset]) -> str:
    """Every curve of the runs, long format: run, study, axis name, step, metric, value."""
    frames = []
    for rid, ds in datasets.items():
        for name in curve_names(ds):
            axis = ds[name].dims[0]
            frames.append(pd.DataFrame({"run": rid, "study": ds.attrs.get("study", ""), "axis": axis,
                                        "step": ds[axis].values, "metric": name, "value": ds[name].values}))
    cols = ["run", "study", "axis", "step", "metric", "value"]
    return (pd.concat(frames) if frames else pd.DataFrame(columns=cols)).to_csv(index=False)


def netcdf_zip(store: Store, run_ids: list[str]) -> bytes:
    """The runs' own netCDF files, zipped (each as <study>/<id>.nc)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rid in run_ids:
            meta = store.get(rid)
            if meta is None:
                raise RunNotFound(f"no run {rid!r}")
            problem = store.check(meta)  # a damaged file is never exported as the run
            if problem:
                raise RunNotFound(f"run {rid!r}: {problem}")
            z.write(store.file(meta), f"{meta['study']}/{rid}.nc")
    return buf.getvalue()


class RunBrowser:
    """The page: filters, the runs table (tick runs to overlay them), the overlay and its controls, actions."""

    def __init__(self, store: Store | None = None):
        self.catalog = Catalog(store)
        self.store = self.catalog.store
        self.visitor = Visitor.here()  # what this page may delete or tag (shared servers: viz/owners.py)
        self.catalog.describe_owner = self.visitor.describe
        self.study = pn.widgets.Select(label="study", options=["all"] + study_names(), value="all", width=160)
        self.status = pn.widgets.MultiChoice(label="status", options=list(STATUSES), width=220)
        self.tag = pn.widgets.TextInput(label="tag", placeholder="e.g. baseline", width=140)
        self.dials = pn.widgets.TextInput(label="dials", placeholder="width=64, flip_rate=0.2", width=240)
        self.table = pn.widgets.Tabulator(self.catalog.frame([]), selectable="checkbox", disabled=True,
                                          pagination="local", page_size=15, show_index=False,
                                          sizing_mode="stretch_width")
        self.metric = pn.widgets.Select(label="metric", options=[], width=200)
        self.smoothing = pn.widgets.FloatSlider(label="smoothing", start=0.0, end=0.99, step=0.01, value=0.0,
                                                width=200)
        self.logx = pn.widgets.Checkbox(label="log x", value=False)
        self.logy = pn.widgets.Checkbox(label="log y", value=False)
        self.relative = pn.widgets.Checkbox(label="relative step axis", value=False)
        self.by_seed = pn.widgets.Checkbox(label="runs differing only in seeds: mean ± sd", value=False)
        self.plot = pn.pane.HoloViews(hv.Overlay([hv.Curve([])]), sizing_mode="stretch_width")
        self.new_tags = pn.widgets.TextInput(label="tags for the ticked runs", placeholder="a,b", width=200)
        self.tag_button = pn.widgets.Button(label="Set tags", width=90)
        self.delete_button = pn.widgets.Button(label="Delete ticked", color="danger", width=120)
        self.csv = pn.widgets.FileDownload(callback=self._csv, filename="runs.csv", label="CSV", width=90)
        self.nc = pn.widgets.FileDownload(callback=self._nc, filename="runs-netcdf.zip", label="netCDF", width=90)
        self.html_out = pn.widgets.FileDownload(callback=self._html, filename="overlay.html", label="plot (HTML)",
                                                width=110)
        self.message = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["wb-error"],
                                     renderer_options={"linkify": False})
        for w in (self.study, self.status, self.tag, self.dials):
            w.param.watch(lambda e: self.refresh(), "value")
        self.table.param.watch(lambda e: self._selection_changed(), "selection")
        for w in (self.metric, self.smoothing, self.logx, self.logy, self.relative, self.by_seed):
            w.param.watch(lambda e: self.redraw(), "value")
        self.tag_button.on_click(lambda e: self._act(self._set_tags))
        self.delete_button.on_click(lambda e: self._act(self._delete))
        self.refresh()

    # -- state ----------------------------------------------------------------------------------------------------
    def selected_ids(self) -> list[str]:
        df = self.table.value
        return [df.iloc[i]["id"] for i in self.table.selection if i < len(df)]

    def selected(self) -> dict[str, xr.Dataset]:
        out = {}
        for rid in self.selected_ids():
            try:
                out[rid] = self.catalog.dataset(rid)
            except RunNotFound as e:
                self._error(str(e))
        return out

    def refresh(self) -> None:
        try:
            rows = self.catalog.rows(self.study.value, self.status.value, self.tag.value.strip(), self.dials.value)
        except ConfigError as e:
            return self._error(str(e))
        self.message.visible = False
        keep = set(self.selected_ids())
        df = self.catalog.frame(rows)
        self.table.value = df
        self.table.selection = [i for i, rid in enumerate(df["id"]) if rid in keep]
        self._selection_changed()

    def _selection_changed(self) -> None:
        selected = self.selected()
        names = sorted({n for ds in selected.values() for n in curve_names(ds)})
        current = self.metric.value
        self.metric.options = names
        if names:  # keep the metric shown; else the headline metric its study declares
            heads = [get_study(ds.attrs["study"]).headline for ds in selected.values()
                     if ds.attrs.get("study") in study_names()]
            self.metric.value = current if current in names else next((h for h in heads if h in names), names[0])
        self.redraw()

    def redraw(self) -> None:
        if not self.metric.value:
            self.plot.object = hv.Overlay([hv.Curve([])]).opts(title="tick runs in the table to overlay them")
            return
        self.plot.object = overlay(self.selected(), self.metric.value, self.smoothing.value, self.logx.value,
                                   self.logy.value, self.relative.value, labels=self._dials(),
                                   by_seed=self.by_seed.value)

    def _dials(self) -> dict[str, dict]:
        """The ticked runs' dials away from their defaults (the curves' names)."""
        out = {}
        for rid in self.selected_ids():
            meta = self.catalog.store.get(rid)
            if meta is not None:
                cls = get_study(meta["study"]) if meta["study"] in study_names() else None
                out[rid] = cls.changed(meta["params"]) if cls else dict(meta["params"])
        return out

    # -- actions --------------------------------------------------------------------------------------------------
    def _act(self, fn) -> None:
        try:
            fn()
        except (ConfigError, RunNotFound, NotOwner) as e:
            return self._error(str(e))
        self.refresh()

    def _ticked_owners(self) -> dict[str, str]:
        rows = {rid: self.store.get(rid) for rid in self.selected_ids()}
        return {rid: (meta or {}).get("owner") or "" for rid, meta in rows.items()}

    def _set_tags(self) -> None:
        check_tags(self.new_tags.value)  # a bad tag is said before anything changes
        self.visitor.check(self._ticked_owners(), "tag")
        for rid in self.selected_ids():
            self.store.set_tags(rid, self.new_tags.value)

    def _delete(self) -> None:
        self.visitor.check(self._ticked_owners(), "delete")
        for rid in self.selected_ids():
            self.store.delete(rid)
            self.catalog.forget(rid)
        self.table.selection = []

    def _error(self, text: str) -> None:
        self.message.object = f"**{escape(text)}**"
        self.message.visible = True

    def _csv(self):
        return io.StringIO(curves_csv(self.selected()))

    def _nc(self):
        return io.BytesIO(netcdf_zip(self.store, self.selected_ids()))

    def _html(self):
        return io.StringIO(standalone_html(self.plot.object))  # opens offline too

    def panel(self) -> pn.viewable.Viewable:
        if pn.state.location is not None:  # filters in the URL: ./runs?study=grokking (an index card links so)
            for name, widget in (("study", self.study), ("tag", self.tag), ("dials", self.dials)):
                pn.state.location.sync(widget, {"value": name})
        filters = pn.Row(self.study, self.status, self.tag, self.dials)
        view = pn.Row(self.metric, self.smoothing, pn.Column(self.logx, self.logy, self.relative, self.by_seed))
        actions = pn.Row(self.new_tags, self.tag_button, self.delete_button, self.csv, self.nc, self.html_out)
        return pn.Column(pn.pane.Markdown("## Runs\nFilter the catalog, tick runs to overlay their curves."),
                         self.message, filters, self.table, view, self.plot, actions, sizing_mode="stretch_width")


def browser_page(store: Store | None = None) -> pn.viewable.Viewable:
    """A fresh run browser for one browser session."""
    return RunBrowser(store).panel()
