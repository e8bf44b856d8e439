"""The study page: dials, Run / Cancel, progress, live curves, then the run's figures.

Training runs in a worker thread; it only puts records on a queue. A periodic callback on the page's own event
loop drains the queue every `period` ms and streams the rows into a HoloViews Buffer, so the browser gets at most
a few batched updates a second and the page stays responsive.
"""
from __future__ import annotations

import html
import queue
import threading

import holoviews as hv
import pandas as pd
import panel as pn
import param

from ..studies import get as get_study, names as study_names
from ..errors import ConfigError
from ..runs import run as run_study
from ..studies.base import describe
from .plots import frame, group_plot, overview

PERIOD_MS = 250  # live updates: 4 a second at most


def widget_for(name: str, p: param.Parameter) -> pn.widgets.Widget:
    """A widget for one dial. Inputs do not clamp: out-of-range values reach validation and show as an error."""
    w = _make_widget(name.replace("_", " "), p)
    if "description" in w.param:  # a hover tooltip with the dial's doc, where the widget has one
        w.description = f"{p.doc} Allowed: {describe(p)}."
    return w


def _make_widget(label: str, p: param.Parameter) -> pn.widgets.Widget:
    kw = dict(label=label)
    if isinstance(p, param.Boolean):
        return pn.widgets.Checkbox(value=p.default, **kw)
    if isinstance(p, param.Selector):
        return pn.widgets.Select(options=list(p.objects), value=p.default, **kw)
    lo, hi = p.bounds if isinstance(p, param.Number) and p.bounds else (None, None)
    if isinstance(p, param.Integer):
        if lo is not None and hi is not None and hi - lo <= 64:
            return pn.widgets.IntSlider(start=lo, end=hi, value=p.default, **kw)
        return pn.widgets.IntInput(value=p.default, **kw)
    if isinstance(p, param.Number):
        if lo is not None and hi is not None and p.softbounds is None:
            return pn.widgets.FloatSlider(start=lo, end=hi, step=p.step or (hi - lo) / 100, value=p.default, **kw)
        return pn.widgets.FloatInput(value=p.default, format="0.[000000]", **kw)
    if isinstance(p, param.List):
        return pn.widgets.TextInput(value="" if p.default is None else str(p.default), placeholder="JSON", **kw)
    return pn.widgets.TextInput(value=str(p.default or ""), **kw)


class StudyPage:
    """One study's page. Each browser session gets its own instance."""

    def __init__(self, study: str, store=None):
        self.cls = get_study(study)
        self.study, self.store = study, store
        self.dials = {n: widget_for(n, p) for n, p in self.cls.dials().items()}
        self.run_button = pn.widgets.Button(label="Run", color="primary", width=100)
        self.cancel_button = pn.widgets.Button(label="Cancel", color="warning", width=100, disabled=True)
        self.force = pn.widgets.Checkbox(label="recompute (ignore the stored result)", value=False)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("Ready. Set the dials and press **Run**.", css_classes=["wb-status"])
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["wb-error"])
        self.columns = [self.cls.axis] + [m for ms in self.cls.curves.values() for m in ms]
        self.buffer = hv.streams.Buffer(self._empty(), length=1_000_000, index=False)
        self.live = pn.Row(*[pn.pane.HoloViews(self._live_group(t, ms), sizing_mode="stretch_width")
                             for t, ms in self.cls.curves.items()], sizing_mode="stretch_width")
        self.result = pn.Column(sizing_mode="stretch_width")
        self.run_button.on_click(self._on_run)
        self.cancel_button.on_click(self._on_cancel)
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._callback = None
        self.last_run = None

    # -- layout ---------------------------------------------------------------------------------------------------
    def _empty(self) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == self.cls.axis else "float64") for c in self.columns})

    def _live_group(self, title, metrics):
        return hv.DynamicMap(lambda data: group_plot(data, self.cls, title, metrics), streams=[self.buffer])

    def panel(self) -> pn.viewable.Viewable:
        header = pn.pane.Markdown(f"## {html.escape(self.cls.title)}\n{html.escape(self.cls.question)}\n\n"
                                  f"<small>{html.escape(self.cls.paper)}</small>", sizing_mode="stretch_width")
        controls = pn.Column(*self.dials.values(), self.force, pn.Row(self.run_button, self.cancel_button), width=300)
        main = pn.Column(header, self.alert, self.status, self.progress, self.live, self.result,
                         sizing_mode="stretch_width")
        return pn.Row(controls, main, sizing_mode="stretch_width")

    # -- actions (on the event loop) ------------------------------------------------------------------------------
    def values(self) -> dict:
        return {n: w.value for n, w in self.dials.items()}

    def _on_run(self, event=None):
        values = self.values()
        try:
            cfg = self.cls.configure(**values)
        except ConfigError as e:
            self.alert.object = f"**Cannot run:** {html.escape(str(e))}"
            self.alert.visible = True
            return
        self.alert.visible = False
        self.buffer.clear()
        self.result.clear()
        self.progress.max = max(1, int(getattr(cfg, self.cls.axis + "s", 100)))
        self.progress.value = 0
        self.status.object = "Starting..."
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self._cancel = threading.Event()
        self._queue = queue.Queue()
        worker = threading.Thread(target=self._work, args=(values, self.force.value, self._cancel, self._queue),
                                  daemon=True, name=f"wb-{self.study}")
        worker.start()
        self._callback = pn.state.add_periodic_callback(self._drain, period=PERIOD_MS)

    def _on_cancel(self, event=None):
        self._cancel.set()
        self.status.object = "Cancelling..."

    def _work(self, values, force, cancel, q):  # worker thread: no widget is touched here
        try:
            result = run_study(self.study, sinks=[q.put], cancel=cancel, progress=False, force=force,
                               store=self.store, **values)
        except Exception as e:  # noqa: BLE001 - shown on the page
            result = e
        q.put(("finished", result))

    def _drain(self):
        rows, finished = [], None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple) and item and item[0] == "finished":
                finished = item[1]
            else:
                rows.append(item)
        if rows:
            self.buffer.send(pd.DataFrame(rows).reindex(columns=self.columns))
            last = rows[-1]
            axis = self.cls.axis
            self.progress.value = min(int(last[axis]), self.progress.max)
            shown = ", ".join(f"{m} {last[m]:.3f}" for m in self.columns[1:4] if m in last)
            self.status.object = f"Running: {axis} {last[axis]}/{self.progress.max} — {shown}"
        if finished is not None:
            self._finish(finished)

    def _finish(self, result):
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.run_button.disabled, self.cancel_button.disabled = False, True
        if isinstance(result, Exception):
            self.alert.object = f"**Run failed:** {html.escape(str(result))}"
            self.alert.visible = True
            self.status.object = "Failed."
            return
        self.last_run = result
        ds = result.ds
        if self.buffer.data.empty and len(ds[self.cls.axis]):  # a stored result: nothing was streamed
            self.buffer.send(frame(ds, self.cls.axis).reindex(columns=self.columns))
            self.progress.value = self.progress.max
        word = {"done": "Done", "diverged": f"Diverged at step {result.step}", "cancelled": "Cancelled",
                "failed": "Failed"}[result.status]
        note = f" ({html.escape(result.error)})" if result.error and result.status == "failed" else ""
        self.status.object = f"{word}{note}. Run `{result.id}` — `wb.load('{result.id}')`, " \
                             f"`workbench show {result.id}`"
        if result.status == "failed":
            self.alert.object = f"**Run failed:** {html.escape(result.error or '')}"
            self.alert.visible = True
        if "example_loss" in ds:
            self.result.objects = [pn.pane.HoloViews(overview(ds).opts(shared_axes=False), widget_location="bottom",
                                                     sizing_mode="stretch_width")]


def study_page(study: str, store=None) -> pn.viewable.Viewable:
    """A fresh page for one browser session."""
    return StudyPage(study, store=store).panel()


def index_page() -> pn.viewable.Viewable:
    """Links to each study's page."""
    cards = []
    for key in study_names():
        cls = get_study(key)
        cards.append(pn.pane.Markdown(
            f"### [{html.escape(cls.title)}](./{key})\n{html.escape(cls.question)}\n\n"
            f"*Dials:* {', '.join(cls.dials())}\n\n<small>{html.escape(cls.paper)}</small>",
            styles={"border": "1px solid #ddd", "border-radius": "8px", "padding": "8px"}, width=420))
    return pn.Column(pn.pane.Markdown("# Noise Workbench\nHow does noise shape learning? Pick a study."),
                     pn.FlexBox(*cards))
