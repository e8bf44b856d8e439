"""Precision formats study page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", notifications=False)
study_page("precision").servable(title="Noise Workbench · Precision formats")
