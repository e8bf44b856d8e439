"""Grokking and softmax collapse study page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", notifications=False)
study_page("grokking").servable(title="Noise Workbench · Grokking and softmax collapse")
