"""The run browser: filters, overlay, smoothing, tags, delete, export (the page object, no browser)."""
import io
import json
import sqlite3
import zipfile

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import workbench as wb
from workbench.errors import ConfigError
from workbench.viz import browser

from .conftest import FAST


@pytest.fixture
def runs(store):
    a = wb.run("label_noise", **FAST, store=store)
    b = wb.run("label_noise", **{**FAST, "flip_rate": 0.1}, store=store)
    c = wb.run("diffusion", steps=4, eval_every=2, n_samples=32, width=8, progress=False, store=store)
    return a, b, c


def test_smoothing_is_tensorboards_debiased_ema():
    y = np.array([1.0, 2.0, np.nan, 4.0])
    s = browser.smooth(y, 0.5)
    assert s[0] == 1.0 and s[1] == pytest.approx((0.25 + 1.0) / 0.75)  # (0.5·0.5·1 + 0.5·2) / (1 − 0.25)
    assert np.isnan(s[2]) and s[3] == pytest.approx((0.125 + 0.25 * 2 + 0.5 * 4) / 0.875)
    assert np.array_equal(browser.smooth(y, 0.0)[[0, 1, 3]], y[[0, 1, 3]])
    with pytest.raises(ConfigError):
        browser.smooth(y, 1.0)


def test_dial_filter_parses_and_refuses_garbage():
    assert browser.parse_dial_filter("width=64, flip_rate=0.2, loss=ce") == {"width": 64, "flip_rate": 0.2,
                                                                              "loss": "ce"}
    with pytest.raises(ConfigError) as e:
        browser.parse_dial_filter("width")
    assert e.value.field == "dials"


def test_filter_overlay_tag_export_delete(store, runs):
    a, b, c = runs
    page = browser.RunBrowser(store)
    assert set(page.table.value["id"]) == {a.id, b.id, c.id}
    page.study.value = "label_noise"
    assert set(page.table.value["id"]) == {a.id, b.id}
    row = page.table.value.set_index("id").loc[b.id]
    assert row["metric"] == "test_acc" and row["best"] == pytest.approx(float(b.ds.test_acc.max()))
    assert "flip_rate=0.1" in row["dials"]
    page.dials.value = "flip_rate=0.1"
    assert list(page.table.value["id"]) == [b.id]
    page.dials.value = "flip_rate"  # bad: said on the page, the table kept
    assert page.message.visible and "dials" in page.message.object
    page.dials.value = ""
    page.table.selection = [0, 1]  # overlay both
    assert page.metric.value == "test_acc" and "train_loss" in page.metric.options  # the declared headline first
    assert "step" not in page.metric.options  # the step counter is no metric
    page.metric.value = "test_acc"
    page.smoothing.value = 0.6
    curves = page.plot.object.values()
    assert len(curves) == 4  # raw (faded) and smoothed, per run
    page.relative.value = True
    assert max(float(c.dimension_values(0).max()) for c in page.plot.object.values()) == 1.0
    frame = pd.read_csv(page._csv())
    assert set(frame["run"]) == {a.id, b.id} and {"test_acc", "train_loss"} <= set(frame["metric"])
    with zipfile.ZipFile(page._nc()) as z:
        names = z.namelist()
        assert sorted(names) == sorted(f"label_noise/{r}.nc" for r in (a.id, b.id))
        back = xr.load_dataset(io.BytesIO(z.read(names[0])), engine="h5netcdf")
        assert "test_acc" in back
    exported = page._html().read().lower()
    assert "<html" in exported and "cdn.bokeh.org" not in exported  # BokehJS inline: the file draws offline
    assert "cdn.holoviz.org" not in exported  # and Panel's stylesheets
    page.table.selection = [list(page.table.value["id"]).index(a.id)]
    page.new_tags.value = "baseline, keep"
    page._act(page._set_tags)
    assert store.get(a.id)["tags"] == ["baseline", "keep"]
    page.study.value = "all"
    page.tag.value = "baseline"
    assert list(page.table.value["id"]) == [a.id]
    page.new_tags.value = "no spaces allowed"  # refused, the tags kept
    page._act(page._set_tags)
    assert page.message.visible and store.get(a.id)["tags"] == ["baseline", "keep"]
    page.tag.value = ""
    page.table.selection = [list(page.table.value["id"]).index(c.id)]
    page._act(page._delete)
    assert store.get(c.id) is None and c.id not in set(page.table.value["id"])
    assert not store.path_for("diffusion", c.id).exists()


def test_filters_run_in_the_catalog_so_old_matching_runs_are_found(tmp_path):
    """Regression: the browser read the newest 500 rows and filtered them in Python; an older matching run was
    invisible behind 500 newer ones."""
    store = wb.Store(tmp_path)
    old = wb.run("label_noise", **{**FAST, "width": 24}, flip_rate=0.35, progress=False, store=store, tags=["old"])
    params = json.dumps({**old.config, "flip_rate": 0.1}, sort_keys=True)
    with sqlite3.connect(store.catalog) as con:  # newer rows that do not match (rows only: no file is read)
        con.executemany("INSERT INTO runs (id, study, kind, status, params, finished, path) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(f"{i:012x}", "label_noise", "run", "failed" if i % 2 else "done", params,
                          "2999-01-01T00:00:00+00:00", "runs/label_noise/none.nc") for i in range(browser.MAX_ROWS + 20)])
    cat = browser.Catalog(store)
    assert [r["id"] for r in cat.rows(dials="flip_rate=0.35")] == [old.id]
    assert [r["id"] for r in cat.rows(dials="flip_rate=0.35, width=24", statuses=("done",))] == [old.id]
    assert cat.rows(dials="flip_rate=0.35", statuses=("failed",)) == []
    assert [r["id"] for r in cat.rows(tag="old")] == [old.id]
    assert [r["id"] for r in cat.rows(dials="noise_kind=symmetric, flip_rate=0.35")] == [old.id]
    assert len(cat.rows(statuses=("failed",))) == (browser.MAX_ROWS + 20) // 2
    with pytest.raises(ConfigError):
        store.list(statuses=("exploded",))


def test_the_overlay_names_runs_by_dials_groups_seeds_and_says_what_is_missing(store):
    runs = [wb.run("label_noise", **{**FAST, "flip_rate": 0.2}, seed=s, progress=False, store=store) for s in (0, 1, 2)]
    other = wb.run("label_noise", **{**FAST, "flip_rate": 0.0}, progress=False, store=store)
    diff = wb.run("diffusion", steps=4, eval_every=2, n_samples=32, width=8, progress=False, store=store)
    page = browser.RunBrowser(store)
    ids = list(page.table.value["id"])
    page.table.selection = [ids.index(r.id) for r in (*runs, other, diff)]
    page.metric.value = "test_acc"
    names = [c.label for c in page.plot.object.values() if c.label]
    assert any("flip_rate=0.2" in n and "seed=1" in n for n in names)  # named by dials, not ids
    assert any("flip_rate=0.0" in n for n in names)
    assert diff.id[:6] in page.plot.object.opts.get().kwargs["title"]  # a ticked run without the metric is named
    page.by_seed.value = True
    layers = list(page.plot.object.values())
    mean = next(c for c in layers if "flip_rate=0.2" in c.label and c.label.endswith("(mean ± sd, n=3)"))
    want = np.mean([r.ds.test_acc.values for r in runs], 0)
    np.testing.assert_allclose(mean.dimension_values(1), want, rtol=1e-6)
    spread = next(c for c in layers if isinstance(c, hv.Spread))
    np.testing.assert_allclose(spread.dimension_values(2), np.std([r.ds.test_acc.values for r in runs], 0, ddof=1),
                               rtol=1e-5)
    assert any("flip_rate=0.0" in c.label and c.label.endswith("(mean ± sd, n=1)") for c in layers)


def test_on_a_shared_server_a_page_deletes_and_tags_only_its_own_runs(store):
    from workbench.viz.owners import Visitor

    mine = wb.run("label_noise", **FAST, store=store, owner="session:me")
    theirs = wb.run("label_noise", **{**FAST, "flip_rate": 0.1}, store=store, owner="user:alice")
    local = wb.run("label_noise", **{**FAST, "flip_rate": 0.2}, store=store)  # from the CLI or a notebook
    page = browser.RunBrowser(store)
    page.visitor = Visitor("session:me", shared=True)
    page.catalog.describe_owner = page.visitor.describe
    page.refresh()
    shown = dict(zip(page.table.value["id"], page.table.value["owner"]))
    assert shown == {mine.id: "you", theirs.id: "alice", local.id: "this machine"}

    def tick(*ids):
        page.table.selection = [i for i, rid in enumerate(page.table.value["id"]) if rid in ids]

    tick(mine.id, theirs.id, local.id)
    page.delete_button.clicks += 1  # refused whole: nothing deleted, the runs not ours named
    assert page.message.visible and "2 of the ticked runs are not yours" in page.message.object
    assert theirs.id in page.message.object and local.id in page.message.object
    assert {r["id"] for r in store.list()} == {mine.id, theirs.id, local.id}
    page.new_tags.value = "mine"
    page.tag_button.clicks += 1
    assert "not yours" in page.message.object and all(not r["tags"] for r in store.list())
    tick(mine.id)
    page.tag_button.clicks += 1
    assert store.get(mine.id)["tags"] == ["mine"]
    page.delete_button.clicks += 1
    assert {r["id"] for r in store.list()} == {theirs.id, local.id}

    single = browser.RunBrowser(store)  # single-user mode (a dashboard on one's own machine): anything
    single.table.selection = list(range(len(single.table.value)))
    single.delete_button.clicks += 1
    assert store.list() == []
