"""The plots render (to Bokeh models) from a run, a loaded run and a bare Dataset."""
import holoviews as hv
import numpy as np
import pytest

import workbench as wb

from .conftest import FAST


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return wb.run("label_noise", flip_rate=0.4, store=wb.Store(tmp_path_factory.mktemp("viz")), progress=False,
                  **FAST)


def test_curves_have_every_group_and_mark_the_best_value(run):
    layout = wb.viz.curves(run)
    assert len(layout) == 3
    acc = layout[0]
    labels = [el.label for el in acc]
    assert "clean test accuracy" in labels and any(lbl.startswith("best (highest)") for lbl in labels)
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


def synthetic_sweep(exponent=-0.5):
    """metric(T, P) = 1 + (T / T_c(P))², T_c = 0.01·(P/100)^exponent: the crossover is known exactly."""
    import numpy as np
    import xarray as xr

    temps, sizes = np.geomspace(1e-5, 1.0, 61), np.array([100, 200, 400, 800, 1600])
    tc = 0.01 * (sizes / 100.0) ** exponent
    values = 1 + (temps[None, :, None] / tc[:, None, None]) ** 2 * np.ones((1, 1, 2))
    ds = xr.Dataset({"weight_change": (("n_train", "temperature", "seed"), values)},
                    coords={"n_train": sizes, "temperature": temps, "seed": [0, 1]}, attrs={"study": "sgd_noise"})
    return ds, tc


def test_power_law_fit_recovers_the_exponent():
    import numpy as np

    x = np.geomspace(1, 100, 20)
    a, c = wb.viz.fit_power_law(x, 3.0 * x**-0.7)
    assert abs(a + 0.7) < 1e-9 and abs(c - 3.0) < 1e-9


def test_crossover_and_its_exponent():
    import numpy as np

    ds, tc = synthetic_sweep(-0.5)
    table = wb.viz.crossover(ds, "weight_change", x="temperature", by="n_train")
    # the metric has doubled from its low-T plateau (1) exactly at T = T_c
    np.testing.assert_allclose(table["crossover"].values, tc, rtol=0.05)
    a, _ = wb.viz.fit_power_law(table["n_train"], table["crossover"])
    assert abs(a + 0.5) < 0.02
    hv.render(wb.viz.crossover_plot(ds, "weight_change", "temperature", "n_train"), backend="bokeh")
    hv.render(wb.viz.power_law(ds, "weight_change", x="temperature", by="n_train"), backend="bokeh")


def test_spectra_plot_of_a_stored_run(data_root):
    import holoviews as hv

    run = wb.run("edge_of_stability", steps=20, sharpness_every=10, n_train=100, width=32)
    ds = run.ds
    assert ds.hessian_top.shape == (5,) and (np.diff(ds.hessian_top.values) <= 0).all()
    assert ds.hessian_top.values[0] == pytest.approx(float(ds.sharpness[-1]), rel=1e-3)  # the same top eigenvalue
    layout = wb.viz.spectra_plot(run)
    assert isinstance(layout, hv.Layout) and len(layout) == 3


def test_curves_by_and_sqnr_heatmap(data_root):
    import holoviews as hv

    from workbench.probes import qerror

    sw = wb.sweep("precision", grid={"precision": ["fp32", "bf16"]}, seeds=[0, 1], epochs=2, width=16, n_train=200)
    overlay = wb.viz.curves_by(sw.ds, "train_loss", "precision")
    labels = [el.label for el in overlay if type(el) is hv.Curve]
    assert labels == ["precision=fp32", "precision=bf16"]
    lab = qerror.lab(("int8", "fp8_e4m3"), ("gaussian",), n=2048)
    assert isinstance(wb.viz.sqnr_heatmap(lab), hv.Overlay)


def test_log_axes_get_ticks_that_do_not_crowd(data_root):
    """A log axis over a decade or two gets 1-2-5 ticks (Bokeh's own put 0.3 to 0.6 on top of each other); the
    masked diffusion page's grey-level histogram and the diffusion page's quality against steps use them."""
    from bokeh.models import FixedTicker

    from workbench.viz.plots import diffusion_plots, log_ticks, masked_diffusion_plots

    assert log_ticks([0.03, 0.6]) == [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]  # a little past the values: the padding
    assert log_ticks(np.array([1e-5, np.nan, 0.0, 0.5])) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # decades past 3
    assert log_ticks([1.97, 2.1]) is None and log_ticks([np.nan]) is None  # too narrow or nothing: Bokeh's own
    tiny = {"steps": 4, "eval_every": 2, "n_train": 50, "n_samples": 32, "width": 16}
    ds = wb.run("masked_diffusion", **tiny, sample_steps=4, progress=False).ds
    hist = hv.render(masked_diffusion_plots(ds), backend="bokeh").children[1][0]
    ticker = hist.yaxis[0].ticker
    wanted = log_ticks(ds.level_hist.values, ds.level_hist_data.values)
    assert isinstance(ticker, FixedTicker) and list(ticker.ticks) == wanted and len(wanted) >= 2
    ds = wb.run("diffusion", steps=4, eval_every=2, n_train=32, n_samples=32, width=16, depth=1, sample_steps=2,
                progress=False).ds
    quality = hv.render(diffusion_plots(ds), backend="bokeh").children[1][0]
    assert list(quality.xaxis[0].ticker.ticks) == [1, 2, 5, 10, 20, 50]
