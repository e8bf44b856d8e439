"""Label-noise study page: `panel serve apps/*.py`."""
import panel as pn

from workbench.viz.page import study_page

pn.extension("tabulator", "filedropper", notifications=False)  # filedropper: the upload box
study_page("label_noise").servable(title="Noise Workbench · label noise")
