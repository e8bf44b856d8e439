"""Masked diffusion page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", notifications=False)
study_page("masked_diffusion").servable(title="Noise Workbench · Masked diffusion")
