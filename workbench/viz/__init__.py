"""Plots (HoloViews) and thin Panel views. The only place Panel is imported (HoloViews imports it too).

In a notebook the JavaScript of Bokeh, HoloViews and Panel is inlined into the output by default (the CDN would
leave every plot empty on a machine without internet): WORKBENCH_RESOURCES=cdn loads it from the CDN instead,
for smaller notebooks where the network is there.
"""
import os

import holoviews as hv
import panel as pn

from ..errors import ConfigError
from .plots import (cell_table, crossover, crossover_plot, curves, curves_by, diffusion_plots, fit_power_law,
                    extras, fourier_spectrum, frame, group_plot, heatmap, loss_histogram, masked_diffusion_plots, overview,
                    phase_diagram, power_law,
                    reduce_axis, schedules_plot, spectra_plot, spectra_views, sqnr_heatmap, sweep_curves)


def _inline() -> bool:
    mode = os.environ.get("WORKBENCH_RESOURCES", "inline").strip().lower()
    if mode not in ("inline", "cdn"):
        raise ConfigError("WORKBENCH_RESOURCES", mode, "inline (the default: no network needed) or cdn")
    return mode == "inline"


INLINE = _inline()
pn.config.inline = INLINE  # the components' stylesheets too, not only the JavaScript bundle
hv.extension("bokeh", logo=False, inline=INLINE)


def app(study: str = "label_noise", **dials):
    """The study's dashboard page, to show inline in JupyterLab (or `.servable()`); `dials` set its widgets
    (checked like any dial: a bad value raises ConfigError naming it)."""
    from .page import StudyPage

    pn.extension("tabulator", inline=INLINE, notifications=False)  # the job table is a Tabulator
    page = StudyPage(study)
    if dials:
        page.cls.configure(**{**page.values(), **dials})  # refused here, before anything is drawn
        for name, value in dials.items():
            page.dials[name].value = value
    return page.panel()


__all__ = ["app", "cell_table", "crossover", "crossover_plot", "curves", "curves_by", "diffusion_plots", "fit_power_law",
           "extras", "fourier_spectrum", "frame", "group_plot", "heatmap", "loss_histogram", "masked_diffusion_plots",
           "overview", "phase_diagram",
           "power_law", "reduce_axis", "schedules_plot", "spectra_plot", "spectra_views", "sqnr_heatmap",
           "sweep_curves"]
