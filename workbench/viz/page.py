"""The study page: dials, Run / Cancel, progress, live curves, then the run's figures; the server's job queue.

Runs and sweeps go to the job queue the whole server shares (`workbench.runs.jobs`): they train in its worker
threads, never on the event loop, and every session sees every job. A page follows one job: a periodic callback on
the page's own event loop reads what the job emitted since the last tick (every `PERIOD_MS` ms) and streams the rows
into a HoloViews Buffer, so the browser gets at most a few batched updates a second and the page stays responsive.
The same callback redraws the queue's table when a job changed, at most once a second.
"""
from __future__ import annotations

import difflib
import html
import itertools
import math
import os
import threading
import time
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
import xarray as xr
from bokeh.document import Document

from ..studies import get as get_study, names as study_names
from ..errors import ConfigError, NotOwner, RunNotFound
from ..plugins import Choice
from ..engine.events import ArrayKept, PartStored, Preview, Recorded, TaskStarted
from ..runs.jobs import Job, JobQueue, lower_priority, shared as shared_jobs
from ..runs.run import Run, run_id
from ..runs.store import Store
from ..stats import spread
from ..studies.base import coerce, describe
from . import owners
from .markup import escape
from .plots import (PALETTE, PREVIEWS, LiveCurves, edit_bokeh, extras, frame, headline_svg, heatmap, label,
                    samples_plot, spectra_views)

PERIOD_MS = 250  # live updates: 4 a second at most
STICKY = {"position": "sticky", "top": "0", "align-self": "flex-start", "max-height": "100vh", "overflow-y": "auto"}
TABLE_S = 1.0  # the job table: redrawn once a second at most


def widget_for(name: str, p: param.Parameter) -> pn.widgets.Widget:
    """A widget for one dial. Inputs do not clamp: out-of-range values reach validation and show as an error."""
    w = _make_widget(name.replace("_", " "), p)
    w.css_classes = [f"wb-dial-{name}"]  # tests and user CSS find a dial by name
    if "description" in w.param:  # a hover tooltip with the dial's doc, where the widget has one
        w.description = f"{p.doc} Allowed: {describe(p)}."
    return w


def _make_widget(label: str, p: param.Parameter) -> pn.widgets.Widget:
    kw = dict(label=label, width=270)  # inside the 300 px dial column, scroll bar included
    if isinstance(p, param.Boolean):
        return pn.widgets.Checkbox(value=p.default, **kw)
    if isinstance(p, Choice):  # the built-in choices offered, an import path of the user's own typed
        return pn.widgets.AutocompleteInput(options=list(p.objects), value=p.default, restrict=False,
                                            min_characters=0, placeholder="or module:function", **kw)
    if isinstance(p, param.Selector):
        return pn.widgets.Select(options=list(p.objects), value=p.default, **kw)
    lo, hi = p.bounds if isinstance(p, param.Number) and p.bounds else (None, None)
    if isinstance(p, param.Integer):
        if lo is not None and hi is not None and hi - lo <= 64:
            return pn.widgets.IntSlider(start=lo, end=hi, value=p.default, **kw)
        return pn.widgets.IntInput(value=p.default, **kw)
    if isinstance(p, param.Number):
        if lo is not None and hi is not None and p.softbounds is None and not spans_decades(p):
            # a slider to drag and a box that shows the exact value and takes any typed one (5e-4 on a 0.01 grid)
            return pn.widgets.EditableFloatSlider(start=lo, end=hi, step=p.step or _nice_step(hi - lo),
                                                  value=p.default, fixed_start=lo, fixed_end=hi, **kw)
        # typed, shown as it is (1e-3 stays 0.001, not 0); the arrows step by the default's order of magnitude
        default = abs(float(p.default or 0))
        step = max(1e-16, 10.0 ** math.floor(math.log10(default))) if default > 0 else 0.1  # Bokeh: step >= 1e-16
        return pn.widgets.FloatInput(value=p.default, step=step, **kw)
    if isinstance(p, param.List):
        return pn.widgets.TextInput(value="" if p.default is None else str(p.default), placeholder="JSON", **kw)
    return pn.widgets.TextInput(value=str(p.default or ""), **kw)


def spans_decades(p: param.Number) -> bool:
    """A dial whose useful values span orders of magnitude (learning rates, ε, 1 − β): a linear slider would show
    most of them as 0 (or as 1), so it gets a typed input."""
    lo, hi = p.bounds
    default = float(p.default or 0)
    if lo > 0:
        return hi / lo >= 1000
    return lo == 0 and (0 < default < (hi - lo) / 100 or 0 < hi - default < (hi - lo) / 100)


def _nice_step(span: float) -> float:
    """A round slider step near a hundredth of the range: 1 -> 0.01, 0.999 -> 0.001, 100 -> 1."""
    return 10.0 ** math.floor(math.log10(span / 100))


class _Follower:
    """What a page part that follows one job shares: `job`, a cursor into its events, a status pane."""

    def _new_events(self):
        """(the job, its events since the last call, whether it has ended)."""
        job = self.job
        items, ended = job.since(self._cursor)
        self._cursor += len(items)
        return job, items, ended

    def _cancel(self, jobs: JobQueue) -> None:
        if self.job is not None:
            try:
                jobs.cancel(self.job.id, by=self.visitor.acting)
            except NotOwner as e:
                self.status.object = escape(str(e))
                return
            self.status.object = "Cancelling..."


class StudyPage(_Follower):
    """One study's page. Each browser session gets its own instance."""

    def __init__(self, study: str, store=None, jobs: JobQueue | None = None):
        self.cls = get_study(study)
        self.study, self.store = study, store
        self.jobs = jobs or shared_jobs()
        self.visitor = owners.Visitor.here()  # whose page: what it may cancel (shared servers, viz/owners.py)
        self.job: Job | None = None  # the job this page follows
        self._cursor = 0  # how many of its events the page has drawn
        self._poller = None
        self._drawn = None  # (run id, figures) rendered by a thread, for the next tick to put on the page
        self._drawn_spectra, self._spectra_busy = None, False  # the live spectra, likewise
        self.dials = {n: widget_for(n, p) for n, p in self.cls.dials().items()}
        self.run_button = pn.widgets.Button(label="Run", color="primary", width=100)
        self.cancel_button = pn.widgets.Button(label="Cancel", color="warning", width=100, disabled=True)
        self.force = pn.widgets.Checkbox(label="recompute (ignore the stored result)", value=False)
        self.compare = pn.widgets.Select(label="compare with (dashed)", options=COMPARE, value="previous", width=260,
                                         css_classes=["wb-compare"])
        self.compare.param.watch(lambda e: self._set_reference(), "value")
        self._drawn_values: dict | None = None  # the dials of the run the curves show
        self._previous: tuple[pd.DataFrame, dict] | None = None  # the run shown before it: (curves, dials)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("Ready. Set the dials and press **Run**.", css_classes=["wb-status"],
                                       renderer_options={"linkify": False})
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["wb-error"],
                                   renderer_options={"linkify": False})  # errors quote user input: text only
        self.buffer = LiveCurves(self.cls)  # the live curves
        self.columns = self.buffer.columns
        # each figure in a column of its own, put in only once it has something to draw: a Bokeh pane's `visible`
        # does not reach the figure, and a figure without data in the page warns "could not set initial ranges"
        self.live_panes = [pn.Column(visible=False, sizing_mode="stretch_width") for _ in self.buffer.figures]
        self.live_hint = pn.pane.Markdown("*The curves draw here as the run records them.*")
        self.live = pn.Column(self.live_hint, pn.GridBox(*self.live_panes, ncols=min(2, len(self.live_panes)),
                                                         sizing_mode="stretch_width"), sizing_mode="stretch_width")
        self.result = pn.Column(sizing_mode="stretch_width")
        self.samples = pn.Column(sizing_mode="stretch_width")  # a diffusion run's samples, live as it samples
        self.spectra = pn.Column(pn.pane.Markdown(SPECTRA_HINT), sizing_mode="stretch_width")
        self.preview = pn.Column(sizing_mode="stretch_width")  # a study's live preview of its dials (if it has one)
        if self.study in PREVIEWS:
            names, _ = PREVIEWS[self.study]
            for name in names:
                self.dials[name].param.watch(lambda e: self._update_preview(), "value")
            self._update_preview()
        for other in {other for other, _ in self.cls.applies.values()}:
            self.dials[other].param.watch(lambda e: self._grey_inert(), "value")
        self._grey_inert()
        self.run_button.on_click(self._on_run)
        self.cancel_button.on_click(self._on_cancel)
        self.last_run = None
        self._arrays, self._coords = {}, {}  # the running run's arrays so far (live spectra)
        self._url_synced = False  # the dials follow the URL once, in the session that first lays the page out
        self._query: dict | None = None  # the URL's parameters as the session opened with them
        self._url_problems: dict[str, str] = {}  # URL values the widgets refused, by dial
        self.sweep = SweepPanel(self)
        self.queue = QueueView(self.jobs, self)
        self.upload = None  # on a served page with a file dial: its upload box (viz/upload.py)

    # -- layout ---------------------------------------------------------------------------------------------------
    def sync_url(self, location) -> None:
        """Keep the dials in the page's URL (?width=64&flip_rate=0.2): a copied link opens with the same dials and,
        on Run, the same cached result. Whatever in the URL no dial can take is said on the page, every problem."""
        for name, widget in self.dials.items():
            location.sync(widget, {"value": name}, on_error=lambda params, name=name: self._url_value(name, params))

    def _url_value(self, name: str, params: dict) -> None:
        """A URL value the widget refused: set it through the dial's own coercion (Panel reads `-1` in a query as
        the float -1.0, which an integer widget refuses), else keep the problem for `check_url` to say."""
        dial = self.cls.dials()[name]
        for value in dict(params).values():
            try:
                self.dials[name].value = coerce(dial, name, value)
            except (ConfigError, ValueError, TypeError):
                self._url_problems[name] = f"{name}={value!r}: not a value of this dial ({describe(dial)})"

    def check_url(self, query: dict) -> list[str]:
        """Every problem with a link's dials, one line each: values the widget refused, values out of the dial's
        range (a widget that does not clamp takes them), and names that are no dial of this study."""
        problems = dict(self._url_problems)
        dials = self.cls.dials()
        for key in query:
            if key in problems:
                continue
            if key not in dials:
                close = difflib.get_close_matches(key, list(dials), n=1)
                problems[key] = f"{key}: no such dial on this page" + (f" (did you mean {close[0]}?)" if close else "")
                continue
            raw = query[key]
            try:
                coerce(dials[key], key, self.dials[key].value)
                wanted = coerce(dials[key], key, raw) if isinstance(raw, str) else raw
                if wanted != self.dials[key].value:  # a value the URL sync could not parse, so never applied
                    raise ConfigError(key, raw, describe(dials[key]))
            except ConfigError as e:
                problems[key] = f"{key}={e.value!r}: not a value of this dial ({e.allowed})"
        lines = list(problems.values())
        if lines:
            self.alert.object = "**Bad URL parameter" + "s" * (len(lines) > 1) + "** — " + \
                ("<br>".join(escape(line) for line in lines))
            self.alert.visible = True
        return lines

    def panel(self) -> pn.viewable.Viewable:
        if pn.state.location is not None and not self._url_synced:
            self._url_synced = True
            self._query = _query(pn.state.location)  # as typed: the sync soon writes the widgets' values back
            self.sync_url(pn.state.location)
        finding = f"\n\n**What to look for:** {html.escape(self.cls.finding)}" if self.cls.finding else ""
        header = pn.pane.Markdown(f"## {html.escape(self.cls.title)}\n{html.escape(self.cls.question)}{finding}"
                                  f"{claims_line(self.cls, self.store)}\n\n"
                                  f"<small>{html.escape(self.cls.paper)}</small>", sizing_mode="stretch_width")
        # Run / Cancel above the dials, in a column that scrolls on its own and stays in view as the page scrolls
        upload = []
        if _served() and any(name in self.dials for name in FILE_DIALS):  # a visitor's own data (viz/upload.py)
            from .upload import DataUpload

            self.upload = DataUpload(self, user_data(self.store))
            upload = [self.upload.panel()]
        controls = pn.Column(pn.Row(self.run_button, self.cancel_button), self.force, *self.dials.values(), *upload,
                             width=300, css_classes=["wb-controls"], styles=STICKY)
        run_tab = pn.Column(self.preview, self.compare, self.status, self.progress, self.live, self.samples,
                            self.result, sizing_mode="stretch_width")
        tabs = pn.Tabs(("Run", run_tab), ("Sweep", self.sweep.panel()), ("Spectra", self.spectra),
                       ("Jobs", self.queue.panel()), dynamic=False, sizing_mode="stretch_width")
        jobs_tab = len(tabs) - 1
        self.queue.shown = lambda: tabs.active == jobs_tab  # the table is redrawn only while someone looks at it
        tabs.param.watch(lambda e: self.queue.refresh(force=True) if e.new == jobs_tab else None, "active")
        pn.state.onload(self._on_load)
        return OneThreadRow(controls, pn.Column(header, self.alert, tabs, sizing_mode="stretch_width"),
                            sizing_mode="stretch_width")

    def _show_measured(self) -> None:
        """Only the figures with something to draw: the rest would be blank boxes (and Bokeh warns about them)."""
        shown = self.buffer.shown()
        if not _served() and self.job is not None and not any(shown):
            shown = [True] * len(shown)  # a notebook: every figure put in once, before its first point (a figure put
            # in from the kernel's periodic callback did not always reach the browser)
        for pane, fig, on in zip(self.live_panes, self.buffer.figures, shown):
            if on and not pane.objects:
                pane.objects = [pn.pane.Bokeh(fig, sizing_mode="stretch_width")]
            pane.visible = on
        self.live_hint.visible = not any(shown)

    def _grey_inert(self) -> None:
        """Dials that do nothing for the current choice of another (gce q with loss = ce) are greyed out, and
        their tooltip says when they act."""
        inert = self.cls.inert(self.values())
        dials = self.cls.dials()
        for name in self.cls.applies:
            widget = self.dials[name]
            widget.disabled = name in inert
            if "description" in widget.param:
                why = f" (Greyed out: {inert[name]}.)" if name in inert else ""
                widget.description = f"{dials[name].doc} Allowed: {describe(dials[name])}.{why}"

    def _update_preview(self):
        names, draw = PREVIEWS[self.study]
        try:
            plot = draw({n: self.dials[n].value for n in names})
        except ConfigError as e:
            self.preview.objects = [pn.pane.Markdown(f"*{escape(e)}*")]
            return
        self.preview.objects = [pn.pane.HoloViews(plot, sizing_mode="stretch_width")]

    # -- actions (on the event loop) ------------------------------------------------------------------------------
    def values(self) -> dict:
        return {n: w.value for n, w in self.dials.items()}

    def job_values(self) -> dict:
        """The dials as a job gets them. On a served page a file dial (data_path) names a file of the server's data
        folder, never any path of its file system (ConfigError otherwise, the same for every refused value)."""
        values = self.values()
        if _served():
            for name in FILE_DIALS:
                if values.get(name):
                    values[name] = served_file(name, values[name], self.store)
        return values

    def _on_run(self, event=None):
        try:
            job = self.jobs.submit_run(self.study, self.job_values(), force=self.force.value, store=self.store,
                                       owner=self.visitor.owner, client=self.visitor.client)
        except ConfigError as e:
            self.alert.object = f"**Cannot run:** {escape(e)}"
            self.alert.visible = True
            return
        self.alert.visible = False
        self.follow(job)

    def follow(self, job: Job) -> None:
        """Draw this job from its start: its curves so far, then live until it ends."""
        self.job, self._cursor = job, 0
        self._new_curves(dict(job.dials))
        self._show_measured()
        self.result.clear()
        self.samples.clear()
        self._arrays, self._coords = {}, {}
        self.progress.max, self.progress.value = max(1, job.total), 0
        self.status.object = "Queued..."
        self.run_button.disabled, self.cancel_button.disabled = True, not self.visitor.may_change(job.owner)
        self.start_polling()

    def _on_load(self) -> None:
        self.start_polling()
        if pn.state.location is not None:
            self.check_url(self._query if self._query is not None else _query(pn.state.location))
        self.show_stored()

    def show_stored(self) -> bool:
        """Draw the stored run of the dials as they are (done or diverged), if there is one: a shared link opens on
        its result, with nothing to recompute."""
        if self.job is not None:
            return False
        try:
            cfg = self.cls.configure(**self.values())
        except ConfigError:
            return False
        config = cfg.config()
        store = self.store or Store()
        meta = store.cached(run_id(cfg))
        if not meta:
            return False
        self._new_curves(self.values())
        self.progress.max = max(1, int(config.get(self.cls.axis + "s", 1) or 1))
        self._finish(Run(meta, store=store))
        self.status.object = "Stored result of these dials. " + self.status.object
        return True

    def _new_curves(self, values: dict) -> None:
        """Clear the curves for a run of dials `values`; what they showed becomes the 'previous run'."""
        if self.buffer.rows and self._drawn_values is not None:
            self._previous = (self.buffer.data, self._drawn_values)
        self.buffer.clear()
        self._drawn_values = values
        self._set_reference()

    def _set_reference(self) -> None:
        """The faded curves: the previous run shown here, or the stored run at the study's default dials."""
        rows, name = None, ""
        if self.compare.value == "previous" and self._previous is not None:
            rows, before = self._previous
            now = self._drawn_values or self.values()
            changed = [f"{k}={before[k]}" for k in before if k in now and before[k] != now[k]]
            name = "previous run" + (f" ({_shorten(', '.join(changed), 60)})" if changed else " (same dials)")
        elif self.compare.value == "default":
            ds = self._default_run()
            if ds is not None:
                rows, name = frame(ds, self.cls.axis), "the stored run at the default dials"
        self.buffer.set_reference(rows, name)

    def _default_run(self):
        """The stored (done or diverged) run of the study's default dials, or None."""
        store = self.store or Store()
        meta = store.cached(run_id(self.cls.configure()))
        if not meta:
            return None
        try:
            return store.load_dataset(meta["id"])
        except (RunNotFound, OSError, ValueError):
            return None

    def start_polling(self) -> None:
        """One periodic callback per page, on its own event loop (a served session's, or a notebook kernel's):
        follows the job and refreshes the queue table."""
        if self._poller is None and (pn.state.curdoc is not None or _in_kernel()):
            self._poller = pn.state.add_periodic_callback(self.tick, period=PERIOD_MS)

    def tick(self) -> None:
        if self._drawn is not None:
            self._show_drawn()
        if self._drawn_spectra is not None:
            drawn, self._drawn_spectra = self._drawn_spectra, None
            if self.job is not None and drawn:  # still the running job's snapshot
                self.spectra.objects = [panels_view(f) for f in drawn]
        self._drain()
        self.sweep._drain()
        self.queue.refresh()

    def _on_cancel(self, event=None):
        self._cancel(self.jobs)

    def _drain(self):
        if self.job is None:
            return
        job, items, ended = self._new_events()
        rows, arrays, sampling = [], False, None
        for event in items:
            if isinstance(event, Preview):  # x̂_0 part-way through sampling: only the latest is drawn
                sampling = (event.values, event.coords["sampling_step"], event.coords.get("sample_class"))
            elif isinstance(event, ArrayKept):
                self._arrays[event.name] = (event.dims, event.values)
                self._coords.update(event.coords)
                arrays = arrays or event.name in SPECTRA_ARRAYS
            elif isinstance(event, Recorded):
                rows.append(event.record)
        if sampling is not None and not ended:
            (i, n) = sampling[1]
            self._show_samples(samples_plot(sampling[0], f"after {self.progress.max} training {self.cls.axis}s: "
                                                         f"x̂₀ at sampler step {i}/{n}", classes=sampling[2]))
        if arrays and not ended:  # spectra snapshots arrive while the run trains: redraw the Spectra tab
            self._show_spectra(xr.Dataset(dict(self._arrays), coords=self._coords, attrs={"study": self.study}))
        cancelling = " — cancelling, stops at the next step..." if job.cancel.is_set() and not ended else ""
        if rows:
            self.buffer.send(pd.DataFrame(rows))
            self._show_measured()
            last = rows[-1]
            axis = self.cls.axis
            self.progress.value = min(int(last[axis]), self.progress.max)
            shown = ", ".join(f"{self.cls.label(m)} {last[m]:.3f}" for m in self.columns[1:]
                              if m in last and np.isfinite(last[m]))
            self.status.object = f"Running: {axis} {last[axis]}/{self.progress.max}" + \
                (f" — {_shorten(shown)}" if shown else "") + cancelling
        elif job.status == "running" and not self.buffer.rows:
            self.progress.value = -1  # indeterminate: set-up and the first measurement (a diffusion run samples)
            self.status.object = f"Running: setting up and measuring at {self.cls.axis} 0..." + cancelling
        elif cancelling:
            self.status.object = "Running" + cancelling
        elif job.status == "queued":
            ahead = sum(1 for j in self.jobs.jobs() if j.status in ("queued", "running") and j.created < job.created)
            self.status.object = f"Queued: {ahead} job{'s' * (ahead != 1)} ahead (see the Jobs tab)."
        if ended:
            self.job = None
            self._finish(job.result if job.result is not None else job)

    def _finish(self, result):
        self.run_button.disabled, self.cancel_button.disabled = False, True
        self.progress.value = max(self.progress.value, 0)  # no longer indeterminate
        self.samples.clear()  # the result's own plots take over
        if isinstance(result, Job):  # ended without a run: cancelled while queued, or could not start
            self.status.object = "Cancelled before it started." if result.status == "cancelled" else "Failed."
            if result.status == "failed":
                self.alert.object = f"**Run failed:** {escape(result.error or '')}"
                self.alert.visible = True
            return
        self.last_run = result
        ds = result.ds
        if not self.buffer.rows and len(ds[self.cls.axis]):  # a stored result: nothing was streamed
            self.buffer.send(frame(ds, self.cls.axis))
            self.progress.value = self.progress.max
        self._show_measured()
        word = {"done": "Done", "diverged": f"Diverged at step {result.step}", "cancelled": "Cancelled",
                "failed": "Failed"}[result.status]
        note = f" ({escape(result.error)})" if result.error and result.status == "failed" else ""
        self.status.object = f"{word}{note}. Run `{result.id}` — `wb.load('{result.id}')`, " \
                             f"`workbench show {result.id}`"
        if result.status == "failed":
            self.alert.object = f"**Run failed:** {escape(result.error or '')}"
            self.alert.visible = True
        if not _served():  # a notebook or a test: draw here
            more = extras(ds)  # the curves are drawn already
            if more is not None:
                self.result.objects = [_on_last(pn.pane.HoloViews(more, widget_location="bottom",
                                                                  sizing_mode="stretch_width"))]
            self._show_spectra(ds)
            return
        # On a server, HoloViews -> Bokeh takes ~0.3-1 s of Python: done in a thread, not on the event loop every
        # session shares; the next tick puts the finished Bokeh models on the page.
        self._drawn = None
        self.result.objects = [pn.pane.Markdown("*Drawing the run's figures...*")]
        threading.Thread(target=self._draw, args=(result.id, ds), daemon=True, name="wb-draw").start()

    def _draw(self, rid: str, ds) -> None:  # a thread: nothing here touches the page
        lower_priority()
        try:
            more = extras(ds)
            figures = [render_panels(more)] if more is not None else []
            spectra = [render_panels(v) for v in spectra_views(ds)]
            self._drawn = (rid, figures, spectra, None)
        except (KeyError, ValueError) as e:  # a run that stored part of a figure's arrays
            self._drawn = (rid, [], [], str(e))

    def _show_drawn(self) -> None:
        (rid, figures, spectra, error), self._drawn = self._drawn, None
        if self.job is not None or self.last_run is None or self.last_run.id != rid:
            return  # another run started meanwhile
        self.result.objects = [panels_view(f) for f in figures] + \
            ([pn.pane.Markdown(f"*Could not draw the figures: {html.escape(error)}*")] if error else [])
        self.spectra.objects = [panels_view(f) for f in spectra] or [pn.pane.Markdown(SPECTRA_HINT)]

    def _show_samples(self, plot):
        if self.samples.objects:
            self.samples.objects[0].object = plot
        else:
            self.samples.objects = [pn.pane.HoloViews(plot, sizing_mode="stretch_width")]

    def _show_spectra(self, ds):
        """Spectra snapshots while a run trains. On a server they are drawn in a thread, like the finished run's
        figures (one drawing at a time: a snapshot that arrives meanwhile waits for the next)."""
        if _served():
            if not self._spectra_busy:
                self._spectra_busy = True
                threading.Thread(target=self._draw_spectra, args=(ds,), daemon=True, name="wb-draw").start()
            return
        try:
            views = spectra_views(ds)
        except (KeyError, ValueError):  # a snapshot caught half-way (one array of a pair): the next one draws
            return
        self.spectra.objects = [_on_last(pn.pane.HoloViews(v, widget_location="bottom", sizing_mode="stretch_width"))
                                for v in views] or [pn.pane.Markdown(SPECTRA_HINT)]

    def _draw_spectra(self, ds) -> None:  # a thread: nothing here touches the page
        lower_priority()
        try:
            self._drawn_spectra = [render_panels(v) for v in spectra_views(ds)]
        except (KeyError, ValueError):  # a snapshot caught half-way (one array of a pair): the next one draws
            pass
        finally:
            self._spectra_busy = False


def claims_line(cls, store=None) -> str:
    """The study's reproduction claims with the verdict of the last report (`workbench reproduce`), if any."""
    import json

    from ..reproduce import CLAIMS

    if not cls.claims:
        return ""
    path = (store or Store()).root / "reports" / "reproduce" / "results.json"
    verdicts: dict[str, list] = {}  # a claim's results, one per profile it was checked at
    try:
        for r in json.loads(path.read_text()) if path.is_file() else []:
            verdicts.setdefault(r["key"], []).append(r)
    except (OSError, ValueError, KeyError, TypeError):
        verdicts = {}
    words = {"pass": "reproduced", "fail": "not reproduced here", "skipped": "not run in the quick profile"}
    parts = []
    for key in cls.claims:
        said = ", ".join(f"**{html.escape(str(words.get(r.get('status'), r.get('status'))))} "
                         f"({html.escape(str(r.get('profile', '')))} profile)**" for r in verdicts.get(key, [])) \
            or "**not yet checked here (`workbench reproduce`)**"
        claim = html.escape(CLAIMS[key].claim if key in CLAIMS else key, quote=True)
        parts.append(f'<span title="{claim}">`{key}`</span>: {said} (`notebooks/reproduce/{key}.ipynb`)')
    return "\n\n**Reproduction:** " + "; ".join(parts)


def _in_kernel() -> bool:
    """Inside a Jupyter kernel, whose event loop runs Panel's periodic callbacks."""
    import sys

    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def on_main_shell(data, default):
    """Where ipykernel (7.x) runs a comm's next message from the browser: on the main shell (None), the thread
    whose event loop also runs the page's periodic callback."""
    return None


class OneThreadRow(pn.Row):
    """A Row whose messages from the browser the kernel handles on its main thread when shown in a notebook.

    JupyterLab (4.4 and later) sends comm messages over a kernel subshell, a thread of its own, so that widgets
    answer while a cell runs. Panel is not made for two threads: a click handled on the subshell while the
    page's periodic callback ran on the main thread made both send the same pending document changes. The
    browser then met figures it already had, echoed their glyphs' values back, and the kernel refused a
    `Line.line_color` sent as a value spec ("failed to validate Line(...).line_color"), a traceback shown in
    the notebook above the running app (tests/test_jupyterlab.py). This Row routes its client comm to the main
    shell, the one thread Panel assumes. Elsewhere (a served page, another kernel) it is a plain Row."""

    def _render_mimebundle(self, model, doc, comm, location=None):
        bundle = super()._render_mimebundle(model, doc, comm, location)
        _, client = self._comms.get(model.ref["id"], (None, None))
        opened = getattr(client, "_on_open", None)

        def on_open(msg):
            if hasattr(client._comm, "_reply_subshell_for"):  # ipykernel's routing hook (7.x)
                client._comm._reply_subshell_for = on_main_shell
            if opened is not None:
                opened(msg)
        if client is not None:
            client._on_open = on_open
        return bundle


FILE_DIALS = ("data_path",)  # dials naming a file the run reads


def user_data(store=None) -> Path:
    """The folder a served dashboard's file dials read from: $WORKBENCH_USER_DATA, else <data folder>/user_data."""
    env = os.environ.get("WORKBENCH_USER_DATA")
    return Path(env).expanduser() if env else (store or Store()).root / "user_data"


def served_file(name: str, value: str, store=None) -> str:
    """A file dial's value on a served page: the name of an .npz file in `user_data()` (a sub-folder path is fine),
    resolved there. Absolute paths, `~` and `..` are refused with the same message as a missing or wrong file, so
    the server's file system cannot be probed through it."""
    folder = user_data(store)
    root = folder.resolve()
    text = str(value).strip()
    path = (root / text).resolve()
    ok = (text and not text.startswith(("/", "~")) and ".." not in Path(text).parts and root in path.parents
          and path.suffix == ".npz" and path.is_file())
    if not ok:
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*.npz")) if root.is_dir() else []
        shown = ", ".join(files[:10]) + (", ..." if len(files) > 10 else "") if files else "none yet"
        raise ConfigError(name, value, f"on this server, the name of an .npz file in its data folder {folder} "
                                       f"(WORKBENCH_USER_DATA): {shown}")
    return str(path)


def _query(location) -> dict:
    """The page URL's parameters as typed (strings; the last of a repeated one), not as Panel parsed them: from
    the session's own request where there is one (the URL itself is rewritten by the dials' sync)."""
    from urllib.parse import parse_qs

    args = getattr(pn.state, "session_args", None) or {}
    if args:
        return {k: (v[-1].decode("utf-8", "replace") if isinstance(v[-1], bytes) else str(v[-1]))
                for k, v in args.items() if v}
    raw = parse_qs((location.search or "").lstrip("?"), keep_blank_values=True)
    return {k: v[-1] for k, v in raw.items()} if raw else dict(location.query_params)


def _duration(seconds: float) -> str:
    """A rough duration in words: '40 s', '3 min', '1.5 h'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _on_last(pane: pn.pane.HoloViews) -> pn.pane.HoloViews:
    """A notebook's HoloMap pane opened on its last frame (the end of training), as the served page's are."""
    for widget in pane.widget_box:
        options = getattr(widget, "options", None)
        if options:
            widget.value = list(options.values())[-1] if isinstance(options, dict) else list(options)[-1]
    return pane


def _shorten(text: str, most: int = 160) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _served() -> bool:
    return pn.state.curdoc is not None and pn.state.curdoc.session_context is not None


def render_panels(obj) -> tuple[list[list[tuple[str, object]]], int]:
    """HoloViews -> Bokeh, one figure per panel of a Layout (a Bokeh grid of responsive figures drew blank on a
    served page: tick fragments in full-size boxes), each panel's frames as `render_frames` gives them; and the
    layout's column count."""
    if isinstance(obj, (hv.Layout, hv.NdLayout)):
        return [render_frames(item) for item in obj], int(getattr(obj, "_max_cols", None) or 2)
    return [render_frames(obj)], 1


def render_frames(obj) -> list[tuple[str, object]]:
    """HoloViews -> Bokeh models, one per frame of a HoloMap (labelled by its key), else one. Safe off the event
    loop: each is drawn into a fresh Document of its own (hv.render would attach it to whatever document the
    serving thread has current: another session's, or none), and belongs to no page until a pane shows it."""
    renderer = hv.renderer("bokeh").instance(mode="server")

    def one(item):
        return renderer.get_plot(item, doc=Document()).state

    if isinstance(obj, hv.HoloMap) and len(obj.kdims) == 1:
        name = obj.kdims[0].label
        return [(f"{name} {k}", one(obj[k])) for k in obj.keys()]
    return [("", one(obj))]


def frames_view(frames: list[tuple[str, object]]) -> pn.viewable.Viewable:
    """Pre-rendered figures; a slider picks the frame where there are several, opening on the last (the end of
    training: the first snapshot of a run is the least telling)."""
    last = len(frames) - 1
    pane = pn.pane.Bokeh(frames[last][1], sizing_mode="stretch_width")
    if len(frames) == 1:
        return pane
    labels = [label for label, _ in frames]
    slider = pn.widgets.DiscreteSlider(options=labels, value=labels[last], sizing_mode="stretch_width")
    slider.param.watch(lambda e: setattr(pane, "object", frames[labels.index(e.new)][1]), "value")
    return pn.Column(pane, slider, sizing_mode="stretch_width")


def panels_view(drawn: tuple[list[list[tuple[str, object]]], int]) -> pn.viewable.Viewable:
    """The panels `render_panels` drew, as a grid of separate figures."""
    panels, cols = drawn
    views = [frames_view(f) for f in panels]
    if len(views) == 1:
        return views[0]
    return pn.GridBox(*views, ncols=min(cols, len(views)), sizing_mode="stretch_width")


class QueueView:
    """The server's job queue as a table every session sees: whose, status, progress, the run it stored; open a
    job of this study to follow it here (another session's too), cancel a job that has not ended (on a shared
    server only one's own: viz/owners.py)."""

    COLUMNS = ["job", "study", "kind", "owner", "dials", "status", "progress", "seconds", "run", "error"]

    def __init__(self, jobs: JobQueue, page: StudyPage):
        self.jobs, self.page = jobs, page
        self._ids: list[str] = []
        self._seen, self._drawn_at = -1, 0.0
        self.shown = lambda: True  # the page says whether the table is on screen
        self.summary = pn.pane.Markdown("", css_classes=["wb-queue-summary"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=self.COLUMNS), disabled=True, show_index=False, sizing_mode="stretch_width",
            height=320, buttons={b: f'<span class="wb-{b}" style="cursor:pointer;text-decoration:underline">{b}</span>'
                                          for b in ("open", "cancel")}, selectable=False,
            formatters={"progress": {"type": "progress", "max": 100, "legend": True}},
            css_classes=["wb-queue"])
        self.table.on_click(self._on_click)
        self.refresh(force=True)

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(pn.pane.Markdown(
            "Every run and sweep on this server, from every browser session, newest first. **open** follows a "
            f"{html.escape(self.page.study)} job on this page; **cancel** stops a queued or running one"
            + (" of yours (this server is shared)." if self.page.visitor.shared else ".")),
            self.summary, self.table, sizing_mode="stretch_width")

    def refresh(self, force: bool = False) -> None:
        """Redraw when a job changed, at most once every TABLE_S seconds (every session polls; this is the throttle)."""
        version = self.jobs.version
        if not force and (version == self._seen or time.monotonic() - self._drawn_at < TABLE_S or not self.shown()):
            return
        self._seen, self._drawn_at = version, time.monotonic()
        jobs = self.jobs.jobs()
        ids = [j.id for j in jobs]
        frame = pd.DataFrame([{**j.row(), "owner": self.page.visitor.describe(j.owner)} for j in jobs],
                             columns=self.COLUMNS)
        if ids == self._ids and len(self.table.value) == len(frame):
            # the same jobs: only the cells that changed (progress, status, seconds), the rows left in place, so
            # a click on "cancel" or "open" lands on the row it was aimed at while jobs progress
            old = self.table.value
            changed = {c: [(i, v) for i, (a, v) in enumerate(zip(old[c], frame[c]))
                           if not (a == v or (pd.isna(a) and pd.isna(v)))] for c in self.COLUMNS}
            changed = {c: cells for c, cells in changed.items() if cells}
            if changed:
                self.table.patch(changed, as_index=False)
        else:
            self.table.value = frame
        self._ids = ids
        counts = {k: v for k, v in self.jobs.counts().items() if v}
        where = self.jobs.where()
        if where["backend"] == "dask":
            n = where["workers"]
            place = f" · on the Dask cluster at `{where['scheduler']}` ({n} worker{'s' * (n != 1)}" + \
                (f", [its dashboard]({where['dashboard']})" if where["dashboard"] else "") + ")" if n else \
                f" · **the Dask scheduler at `{where['scheduler']}` does not answer**"
        else:
            place = f" · {self.jobs.workers} worker{'s' * (self.jobs.workers != 1)} in this server"
        self.summary.object = "Queue: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "empty") + place

    def _on_click(self, event) -> None:
        if event.column not in ("open", "cancel") or not 0 <= event.row < len(self._ids):
            return
        try:
            job = self.jobs.get(self._ids[event.row])
        except ConfigError:  # forgotten since the table was drawn
            return
        if event.column == "cancel":
            try:
                self.jobs.cancel(job.id, by=self.page.visitor.acting)
            except NotOwner as e:  # said above the tabs, where it stays until the next action
                self.page.alert.object = f"**Cannot cancel:** {escape(e)}"
                self.page.alert.visible = True
                return
        elif job.study != self.page.study:
            self.summary.object = f"Job `{job.id}` is a {html.escape(job.study)} job: open it on the " \
                                  f"[{html.escape(job.study)} page](./{job.study})."
            return
        elif job.kind == "sweep":
            self.page.sweep.follow(job)
        else:
            self.page.follow(job)
        self.refresh(force=True)


COMPARE = {"the previous run": "previous", "the default dials' stored run": "default", "nothing": "none"}
SPECTRA_ARRAYS = ("weight_eigenvalues", "feature_eigenvalues", "hessian_density", "fourier_power")
SPECTRA_HINT = ("*Spectra of the last run show here: the Hessian's density and top eigenvalues, a layer's weight "
                "spectrum against Marchenko–Pastur, the hidden features' covariance spectrum, the embeddings' Fourier "
                "spectrum — whichever the study stores (label noise: set `spectra_every`). The scalar summaries "
                "(sharpness, tail exponent, effective rank) stream live with the curves.*")


def study_page(study: str, store=None) -> pn.viewable.Viewable:
    """A fresh page for one browser session."""
    return StudyPage(study, store=store).panel()


def index_page(store=None) -> pn.viewable.Viewable:
    """A card per study: its question, what to look for, its claims' verdicts, and its headline figure drawn from
    the stored runs (the run at the default dials if stored, else the newest finished run)."""
    store = store or Store()
    cards = []
    for key in study_names():
        cls = get_study(key)
        figure, about = _card_figure(cls, store)
        finding = f"\n\n*What to look for:* {html.escape(cls.finding)}" if cls.finding else ""
        cards.append(pn.Column(
            pn.pane.Markdown(f"### [{html.escape(cls.title)}](./{key})\n{html.escape(cls.question)}{finding}"
                             f"{claims_line(cls, store)}", sizing_mode="stretch_width"),
            pn.pane.HTML(figure, sizing_mode="stretch_width", css_classes=["wb-card-figure-box"]),
            pn.pane.Markdown(f"<small>{about}</small>\n\n<small>{html.escape(cls.paper)}</small>",
                             sizing_mode="stretch_width"),
            styles={"border": "1px solid #ddd", "border-radius": "8px", "padding": "8px"}, width=440,
            css_classes=["wb-card", f"wb-card-{key}"]))
    return pn.Column(pn.pane.Markdown("# Noise Workbench\nHow does noise shape learning? Pick a study — or open "
                                      "the [run browser](./runs) to compare stored runs."),
                     pn.FlexBox(*cards, sizing_mode="stretch_width"), sizing_mode="stretch_width")


_CARD_FIGURES: dict[str, str] = {}  # run id -> its headline SVG (a stored run never changes)


def _card_figure(cls, store: Store) -> tuple[str, str]:
    """(the card's figure as HTML, a line saying which run it is)."""
    try:
        default = store.cached(run_id(cls.configure()))
    except (ConfigError, OSError, ValueError):
        default = None
    if default:
        runs, which = [default], "the stored run at the default dials"
    else:
        runs, which = store.list(study=cls.key, statuses=("done", "diverged"), kind="run", limit=5), "the newest run"
    count = len(store.list(study=cls.key, kind="run"))
    for meta in runs:
        if meta["id"] not in _CARD_FIGURES:
            try:
                _CARD_FIGURES[meta["id"]] = headline_svg(store.load_dataset(meta["id"]))
            except (RunNotFound, OSError, ValueError, KeyError):
                continue
        dials = _shorten(", ".join(f"{k}={v}" for k, v in cls.changed(meta["params"]).items()), 80)
        return _CARD_FIGURES[meta["id"]], \
            f"{html.escape(which)}: `{meta['id']}`{' — ' + html.escape(dials) if dials else ''} " \
            f"· [{count} stored run{'s' * (count != 1)}](./runs?study={cls.key})"
    return ('<div class="wb-card-empty" style="height:90px;display:flex;align-items:center;justify-content:center;'
            'background:#fafafa;border:1px dashed #ccc;color:#777;font:12px sans-serif">No stored run yet: open the '
            'study and press Run — its headline curve shows here.</div>'), "no stored runs"


class SweepPanel(_Follower):
    """Sweep mode of a study page: two dials and their values, seeds, Sweep / Cancel; the phase diagram fills in
    as cells train (live values while a task runs, final ones when it is stored); click a cell for its curves.
    The other dials come from the page's own widgets."""

    def __init__(self, page: StudyPage):
        self.page, cls = page, page.cls
        self.visitor = page.visitor
        self.grid: dict = {}
        self.curves: dict[tuple, dict[int, float]] = {}  # (x, y, seed) -> {epoch: value} for the chosen metric
        self.tasks: dict[int, list[dict]] = {}  # task -> its cells, in model order
        self.job: Job | None = None  # the sweep job this panel follows
        self._cursor = 0
        self.last_sweep = None
        numeric = [n for n, p in cls.dials().items() if isinstance(p, (param.Number, param.Selector)) and n != "seed"]
        metrics = [m for ms in cls.curves.values() for m in ms] + list(cls.summaries)
        presets = ["(custom)"] + list(cls.presets)
        css = lambda name: dict(css_classes=[f"wb-sweep-{name}"])  # noqa: E731 - tests and user CSS find them
        self.preset = pn.widgets.Select(label="preset", options=presets, value="(custom)", **css("preset"))
        self.x = pn.widgets.Select(label="x dial", options=numeric, value=numeric[0], **css("x"))
        self.x_values = pn.widgets.TextInput(label="x values", value="0:0.6:4", placeholder="START:STOP:COUNT or a,b,c",
                                             **css("x-values"))
        self.y = pn.widgets.Select(label="y dial", options=numeric, value=numeric[min(2, len(numeric) - 1)],
                                   **css("y"))
        self.y_values = pn.widgets.TextInput(label="y values", value="16,64", placeholder="START:STOP:COUNT or a,b,c",
                                             **css("y-values"))
        self.seeds = pn.widgets.TextInput(label="seeds", value="2", placeholder="a count, or 0,5,7", **css("seeds"))
        self.metric = pn.widgets.Select(label="metric", options=metrics, value=cls.headline or metrics[0],
                                        **css("metric"))
        self.reduce = pn.widgets.Select(label="cell value", options=["final", "best", "peak_minus_final"], value="final",
                                        **css("reduce"))
        self.button = pn.widgets.Button(label="Sweep", color="primary", width=100)
        self.cancel_button = pn.widgets.Button(label="Cancel", color="warning", width=100, disabled=True)
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("Pick two dials and their values, then press **Sweep**.",
                                       renderer_options={"linkify": False},
                                       css_classes=["wb-sweep-status"])
        self.about = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.pipe = None
        self.diagram_area = pn.Column(pn.pane.Markdown("*The phase diagram fills in here, cell by cell.*"),
                                      sizing_mode="stretch_width")
        for dial, values in ((self.x, self.x_values), (self.y, self.y_values)):
            self._choices(dial.value, values, first=True)
            dial.param.watch(lambda e, values=values: self._choices(e.new, values), "value")
        self.preset.param.watch(self._on_preset, "value")
        for w in (self.metric, self.reduce):
            w.param.watch(lambda e: self._new_scale(), "value")
        for w in (self.x, self.y, self.x_values, self.y_values, self.seeds):
            w.param.watch(lambda e: self._count(), "value")
        # the colour range: widening as the diagram fills, or pinned by the user (both ends) to compare diagrams
        self.colour_lo = pn.widgets.FloatInput(label="colour from", value=None, placeholder="auto", width=125,
                                               css_classes=["wb-sweep-colour-lo"])
        self.colour_hi = pn.widgets.FloatInput(label="colour to", value=None, placeholder="auto", width=125,
                                               css_classes=["wb-sweep-colour-hi"])
        for w in (self.colour_lo, self.colour_hi):
            w.param.watch(lambda e: self._new_scale(), "value")
        self._clim = None
        self._submitted = None  # what _on_sweep's thread queued (a Job) or the reason it could not (a ConfigError)
        self.button.on_click(self._on_sweep)
        self.cancel_button.on_click(self._on_cancel)
        self._count()

    def panel(self):
        controls = pn.Column(self.preset, self.x, self.x_values, self.y, self.y_values, self.seeds, self.metric,
                             self.reduce, pn.Row(self.colour_lo, self.colour_hi), pn.Row(self.button, self.cancel_button),
                             width=300)
        return pn.Row(controls, pn.Column(self.about, self.status, self.progress, self.diagram_area,
                                          sizing_mode="stretch_width"), sizing_mode="stretch_width")

    def _new_diagram(self):
        """A fresh diagram for a new grid: every cell present from the start (empty), so the axes are fixed; and
        the clicked cell's curves, a figure of its own (one line per seed) whose ranges follow the data."""
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure

        self._clim = None
        self.pipe = hv.streams.Pipe(data=self._table())
        tap = hv.streams.Tap(x=None, y=None)  # a linked stream reaches the browser only as a stream of a plotted map
        diagram = hv.DynamicMap(self._heatmap, streams=[self.pipe, tap])
        tap.add_subscriber(lambda x, y: self._show_cell(x, y))
        axis, seeds = self.page.cls.axis, self.seed_list
        fig = figure(title="click a cell of the diagram to see its curves", height=300, min_width=320,
                     sizing_mode="stretch_width", x_axis_label=axis, y_axis_label=label(self.metric.value),
                     toolbar_location="above", tools="pan,wheel_zoom,box_zoom,reset,save")
        self._cell_sources = []
        for i, seed in enumerate(seeds):
            src = ColumnDataSource({"x": [], "y": []})
            fig.line("x", "y", source=src, color=PALETTE[i % len(PALETTE)], line_width=2, legend_label=f"seed {seed}")
            fig.scatter("x", "y", source=src, color=PALETTE[i % len(PALETTE)], size=4, legend_label=f"seed {seed}")
            self._cell_sources.append(src)
        legend = fig.legend[0]
        fig.center.remove(legend)
        legend.orientation = "horizontal"
        fig.add_layout(legend, "below")
        self.cell_figure, self._cell = fig, None
        self.diagram_area.objects = [pn.pane.HoloViews(diagram, sizing_mode="stretch_width"),
                                     pn.pane.Bokeh(fig, sizing_mode="stretch_width")]

    @property
    def seed_list(self) -> list:
        return list(self.job.options["seeds"]) if self.job is not None else sorted({k[2] for k in self.curves})

    # -- the diagram --------------------------------------------------------------------------------------------
    def _table(self) -> pd.DataFrame:
        x, y = (list(self.grid) + [None, None])[:2] if self.grid else ("x", "y")
        rows = []
        by_cell: dict = {cell: [] for cell in itertools.product(*list(self.grid.values())[:2])}
        for (xv, yv, seed), curve in self.curves.items():
            if curve:
                by_cell.setdefault((xv, yv), []).append(self._reduce(curve))
        for (xv, yv), vals in by_cell.items():
            s = spread(vals)
            rows.append({x: xv, y: yv, "mean": s.mean, "std": s.sd, "n": s.n})
        return pd.DataFrame(rows, columns=[x, y, "mean", "std", "n"])

    def _reduce(self, curve: dict) -> float:
        values = np.array([curve[e] for e in sorted(curve)], dtype=float)
        best = self.page.cls.metric(self.metric.value).best(values)  # nan for a metric without a direction
        return {"final": values[-1], "best": best, "peak_minus_final": best - values[-1]}[self.reduce.value] \
            if np.isfinite(values).any() else np.nan

    def _heatmap(self, data, x=None, y=None):  # x, y: the tap, handled by _show_cell
        x, y = list(data.columns[:2])
        order = tuple(list(self.grid.values())[:2]) if self.grid else None
        finite = data["mean"].astype(float)
        finite = finite[np.isfinite(finite)]
        pinned = self.pinned()
        if pinned is not None:
            self._clim = pinned
        elif len(finite):  # the colour range only widens while the diagram fills: colours keep their meaning
            lo, hi = float(finite.min()), float(finite.max())
            if self._clim is not None:
                lo, hi = min(lo, self._clim[0]), max(hi, self._clim[1])
            self._clim = (lo, hi if hi > lo else lo + 1e-9)
        return heatmap(data, self.metric.value, x, y, self.reduce.value, order=order, clim=self._clim, cls=self.page.cls)

    def pinned(self) -> tuple[float, float] | None:
        """The colour range the user pinned (both ends, low < high), else None (automatic)."""
        lo, hi = self.colour_lo.value, self.colour_hi.value
        if lo is None or hi is None:
            return None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            self._alert(f"colour range {lo} to {hi}: the low end must be below the high end")
            return None
        return float(lo), float(hi)

    def _show_cell(self, x, y) -> None:
        """A tap on the diagram: that cell's curves, one per seed."""
        if x is None or not self.grid:
            return
        xs, ys = list(self.grid.values())[:2]
        self._cell = (_nearest(xs, x), _nearest(ys, y))
        self._draw_cell()

    def _draw_cell(self) -> None:
        if self._cell is None or not hasattr(self, "cell_figure"):
            return
        xv, yv = self._cell
        names = list(self.grid)
        data = []
        for seed in self.seed_list:
            curve = self.curves.get((xv, yv, seed), {})
            ep = [e for e in sorted(curve) if np.isfinite(curve[e])]
            data.append({"x": ep, "y": [curve[e] for e in ep]})
        title = f"{label(self.metric.value, self.page.cls)} at {names[0]}={xv}, {names[1]}={yv}"
        fig, sources, ylabel = self.cell_figure, self._cell_sources, label(self.metric.value, self.page.cls)

        def draw():
            for src, d in zip(sources, data):
                src.data = d
            fig.title.text, fig.yaxis.axis_label = title, ylabel
        edit_bokeh(draw)

    def _shape(self) -> str:
        sizes = " × ".join(str(len(v)) for v in self.grid.values())
        n = len(self.seed_list)
        return f"{sizes} grid × {n} seed{'s' * (n != 1)}"

    def _new_scale(self):
        self._clim = None
        self._refresh()

    def _count(self) -> None:
        """What pressing Sweep would train, said before it is pressed: the runs, and how long they might take (or
        that the sweep is stored and opens at once)."""
        from ..cli import parse_seeds
        from ..runs.sweep import estimate, parse_values

        if self.job is not None:
            return
        try:
            xs, ys = parse_values(self.x_values.value), parse_values(self.y_values.value)
            seeds = parse_seeds(self.seeds.value)
        except ConfigError as e:
            self.status.object = f"*{escape(e)}*"
            return
        nx, ny, ns = len(xs), len(ys), len(seeds)
        line = f"{nx} × {ny} grid × {ns} seed{'s' * (ns != 1)} = **{nx * ny * ns} runs**. "
        try:
            if self.x.value == self.y.value:
                raise ConfigError("y dial", self.y.value, "a dial other than the x dial")
            grid = {self.x.value: xs, self.y.value: ys}
            dials = {k: v for k, v in self.page.values().items() if k not in grid and k != "seed"}
            cost = estimate(self.page.study, grid, seeds, dials, store=self.page.store)
        except ConfigError as e:
            self.status.object = line + f"*Cannot sweep: {escape(e)}*"
            return
        limit = self.page.jobs.quotas.sweep_cells
        if cost["cells"] > limit:
            line += f"*More than this server allows ({limit} cells per sweep): fewer values or seeds.*"
        elif cost["stored"]:
            line += "Stored already: **Sweep** opens it at once."
        else:
            line += (f"About {_duration(cost['seconds'])} (from {cost['basis']}). " if cost["seconds"] is not None
                     else "No stored run of this study to estimate the time from. ") + "Press **Sweep** to train them."
        self.status.object = line

    def _refresh(self):
        if self.pipe is not None:
            self.pipe.send(self._table())
            self._draw_cell()

    def _choices(self, dial: str, values, first: bool = False) -> None:
        """A dial of named choices (a float type, a sampler) gets its values field filled with its choices (up to
        four), which a range such as 0:0.6:4 could never be; a numeric dial keeps what the field says, except on
        the page's first drawing where that does not fit it: then half, once and twice its default, within its
        bounds (0, a quarter and half its range for a default of 0)."""
        p = self.page.cls.param[dial]
        if isinstance(p, param.Selector):
            values.value = ",".join(map(str, list(p.objects)[:4]))
            return
        if not first:
            return
        from ..runs.sweep import parse_values

        try:
            for v in parse_values(values.value):
                coerce(p, dial, v)
            return
        except ConfigError:
            pass
        lo, hi = p.softbounds if getattr(p, "softbounds", None) else p.bounds or (None, None)
        d = p.default
        raw = [d / 2, d, d * 2] if d else [0, (hi or 1) / 4, (hi or 1) / 2]
        kept = []
        for v in raw:
            v = min(max(v, lo if lo is not None else v), hi if hi is not None else v)
            v = int(round(v)) if isinstance(p, param.Integer) else float(f"{v:.3g}")
            if v not in kept:
                kept.append(v)
        values.value = ",".join(map(str, kept))

    # -- actions ------------------------------------------------------------------------------------------------
    def _on_preset(self, event):
        if event.new == "(custom)":
            self.about.object = ""
            return
        p = self.page.cls.presets[event.new]
        names = [p["x"], p["y"]] if {p.get("x"), p.get("y")} <= set(p["grid"]) else list(p["grid"])[:2]
        (xn, xv), (yn, yv) = ((n, p["grid"][n]) for n in names)
        self.x.value, self.y.value = xn, yn
        self.x_values.value, self.y_values.value = ",".join(map(str, xv)), ",".join(map(str, yv))
        self.seeds.value = ",".join(map(str, p["seeds"]))
        self.metric.value, self.reduce.value = p["metric"], p["epoch"]
        for name, value in p["dials"].items():
            if name in self.page.dials:
                self.page.dials[name].value = value
        self.about.object = f"**{event.new}**: {html.escape(p['about'])}"

    def _alert(self, text):
        self.page.alert.object = f"**Cannot sweep:** {escape(text)}"
        self.page.alert.visible = True

    def _on_sweep(self, event=None):
        """Check the grid, then queue the sweep from a thread: laying out a large grid takes seconds, which the
        event loop every session shares must not wait for; the next tick follows the job (or says the error)."""
        from ..cli import parse_seeds
        from ..runs.sweep import parse_values

        try:
            if self.x.value == self.y.value:
                raise ConfigError("y dial", self.y.value, "a dial other than the x dial")
            grid = {self.x.value: parse_values(self.x_values.value), self.y.value: parse_values(self.y_values.value)}
            seeds = parse_seeds(self.seeds.value)
        except ConfigError as e:
            self._alert(str(e))
            return
        try:
            dials = {k: v for k, v in self.page.job_values().items() if k not in grid and k != "seed"}
        except ConfigError as e:
            self._alert(str(e))
            return
        visitor, jobs, store = self.page.visitor, self.page.jobs, self.page.store
        self.button.disabled = True
        self.status.object = f"Checking {len(grid[self.x.value])} × {len(grid[self.y.value])} grid × {len(seeds)} " \
                             "seeds..."

        def submit():
            try:
                self._submitted = jobs.submit_sweep(self.page.study, grid, seeds, dials, store=store,
                                                    owner=visitor.owner, client=visitor.client)
            except ConfigError as e:
                self._submitted = e
        if _served():
            threading.Thread(target=submit, daemon=True, name="wb-plan").start()
            self.page.start_polling()
        else:  # a notebook or a test: at once
            submit()
            self._take_submitted()

    def _take_submitted(self) -> None:
        """The sweep queued by _on_sweep's thread: follow it, or say why it was refused."""
        submitted, self._submitted = self._submitted, None
        if submitted is None:
            return
        if isinstance(submitted, ConfigError):
            self.button.disabled = False
            self._alert(str(submitted))
            self._count()
            return
        self.page.alert.visible = False
        self.follow(submitted)

    def follow(self, job: Job) -> None:
        self.job, self._cursor = job, 0
        self.grid = job.options["axes"]  # the grid as validated: values in their order
        self.curves, self.tasks = {}, {}
        self._new_diagram()
        self.progress.max, self.progress.value = job.total, 0
        self.status.object = f"Sweeping {self._shape()}: {job.total} runs..."
        self.button.disabled, self.cancel_button.disabled = True, not self.visitor.may_change(job.owner)
        self.page.start_polling()

    def _on_cancel(self, event=None):
        self._cancel(self.page.jobs)

    def _drain(self):
        self._take_submitted()
        if self.job is None:
            return
        job, items, ended = self._new_events()
        changed = False
        metric, axis = self.metric.value, self.page.cls.axis
        names = list(self.grid)
        for event in items:
            if isinstance(event, TaskStarted):
                self.tasks[event.task] = event.cells
            elif isinstance(event, Recorded) and metric in event.record and event.task in self.tasks:
                rec = event.record
                for cell, v in zip(self.tasks[event.task], np.atleast_1d(rec[metric])):
                    key = (cell[names[0]], cell[names[1]], cell["seed"])
                    self.curves.setdefault(key, {})[int(rec[axis])] = float(v)
                changed = True
            elif isinstance(event, PartStored):
                self._read(event.dataset)
                self.progress.value = min(self.progress.max,
                                          self.progress.value + event.dataset.sizes.get("model", 1))
                changed = True
        if changed:
            self._refresh()
            self.status.object = f"Sweeping {self._shape()}: {self.progress.value}/{self.progress.max} runs stored" + \
                (" — cancelling, stops at the next step..." if job.cancel.is_set() else "")
        elif job.status == "queued":
            self.status.object = "Queued (see the Jobs tab)..."
        if ended:
            self.job = None
            self._finish(job.result if job.result is not None else job)

    def _read(self, ds):
        """Curves of the chosen metric for every cell in a stored part (dims: model, axis)."""
        metric, axis = self.metric.value, self.page.cls.axis
        if metric not in ds:
            return
        names = list(self.grid)
        for m in range(ds.sizes.get("model", 1)):
            one = ds.isel(model=m) if "model" in ds.dims else ds
            key = (one[names[0]].item(), one[names[1]].item(), one["seed"].item())
            self.curves[key] = _curve(one[metric], axis)

    def _finish(self, result):
        self.button.disabled, self.cancel_button.disabled = False, True
        if isinstance(result, Job):  # ended without a sweep: cancelled while queued, or could not start
            if result.status == "failed":
                self._alert(result.error or "")
            self.status.object = "Cancelled before it started." if result.status == "cancelled" else "Failed."
            return
        self.last_sweep = result
        if result.ds.sizes and self.metric.value in result.ds:  # a stored sweep streams nothing: read it whole
            names = list(self.grid)
            da = result.ds[self.metric.value]
            for idx in itertools.product(*(range(result.ds.sizes[d]) for d in [*names, "seed"])):
                one = da.isel(dict(zip([*names, "seed"], idx)))
                key = (one[names[0]].item(), one[names[1]].item(), one["seed"].item())
                curve = {e: v for e, v in _curve(one, self.page.cls.axis).items() if np.isfinite(v)}
                if curve:
                    self.curves[key] = curve
            self.progress.value = self.progress.max
        self._refresh()
        self.status.object = f"Sweep {result.status}: `{result.id}` — `wb.load('{result.id}')`" + \
            (f" ({escape(result.error)})" if result.error else "") + ". Click a cell for its curves."


def _curve(da, axis: str) -> dict[int, float]:
    """{step: value} of one cell's metric; a per-run summary (no step axis) is one point."""
    if axis not in da.dims:
        return {0: float(da)}
    return {int(e): float(v) for e, v in zip(da[axis].values, da.values)}


def _nearest(values, v):
    """The grid value a tap landed on (categorical axes report the value itself; numeric ones a position)."""
    if v in values:
        return v
    try:
        return min(values, key=lambda a: abs(float(a) - float(v)))
    except (TypeError, ValueError):
        return next((a for a in values if str(a) == str(v)), values[0])
