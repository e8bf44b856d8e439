"""The run browser: filter the catalog, overlay runs' curves, tag, delete, export."""
import panel as pn

from workbench.viz.browser import browser_page

pn.extension("tabulator")
browser_page().servable(title="Noise Workbench — runs")
