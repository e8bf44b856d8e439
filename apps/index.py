"""Index of the studies: `panel serve apps/*.py --index index`."""
import panel as pn

from workbench.viz.page import index_page

pn.extension()
index_page().servable(title="Noise Workbench")
