"""The plots render (to Bokeh models) from a run, a loaded run and a bare Dataset."""
import holoviews as hv
import pytest

import workbench as wb

from .conftest import FAST


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return wb.run("label_noise", flip_rate=0.4, store=wb.Store(tmp_path_factory.mktemp("viz")), progress=False,
                  **FAST)


def test_curves_have_every_group_and_mark_the_peak(run):
    layout = wb.viz.curves(run)
    assert len(layout) == 3
    acc = layout[0]
    labels = [el.label for el in acc]
    assert "clean test accuracy" in labels and any(lbl.startswith("peak") for lbl in labels)
    assert any(isinstance(el, hv.VLine) for el in acc)
    hv.render(layout, backend="bokeh")


def test_loss_histogram_has_one_frame_per_snapshot(run):
    hm = wb.viz.loss_histogram(run)
    assert list(hm.keys()) == [int(e) for e in run.ds.snapshot.values]
    frame = hm.last
    assert {h.label.split()[0] for h in frame} == {"clean", "flipped"}
    hv.render(hm, backend="bokeh")


def test_overview_from_a_dataset_and_from_run_plot(run):
    hv.render(wb.viz.overview(run.ds), backend="bokeh")
    hv.render(run.plot(), backend="bokeh")
