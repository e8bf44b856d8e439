"""Plots (HoloViews) and thin Panel views. The only place Panel is imported."""
import holoviews as hv

from .plots import (cell_table, crossover, crossover_plot, curves, curves_by, diffusion_plots, fit_power_law,
                    extras, fourier_spectrum, frame, group_plot, heatmap, loss_histogram, overview, phase_diagram, power_law,
                    reduce_axis, schedules_plot, spectra_plot, spectra_views, sqnr_heatmap, sweep_curves)

hv.extension("bokeh", logo=False)


def app(study: str = "label_noise"):
    """The study's dashboard page, to show inline in JupyterLab (or `.servable()`)."""
    import panel as pn

    from .app import study_page

    pn.extension()
    return study_page(study)


__all__ = ["app", "cell_table", "crossover", "crossover_plot", "curves", "curves_by", "diffusion_plots", "fit_power_law",
           "extras", "fourier_spectrum", "frame", "group_plot", "heatmap", "loss_histogram", "overview", "phase_diagram",
           "power_law", "reduce_axis", "schedules_plot", "spectra_plot", "spectra_views", "sqnr_heatmap",
           "sweep_curves"]
