"""Edge-of-stability page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", notifications=False)
study_page("edge_of_stability").servable(title="Noise Workbench · Edge of stability")
