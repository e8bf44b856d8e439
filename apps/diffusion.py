"""Diffusion page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", notifications=False)
study_page("diffusion").servable(title="Noise Workbench · Diffusion")
