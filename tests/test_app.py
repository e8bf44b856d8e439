"""The dashboard: the study page in process, and served by `panel serve` driven in headless Chromium."""
import urllib.request

import pytest

import workbench as wb
from workbench.engine.events import ArrayKept, Preview
from workbench.viz.markup import escape

from .served import browser, server  # noqa: F401 - fixtures


# -- in process -------------------------------------------------------------------------------------------------
def test_page_has_a_widget_per_dial_and_refuses_bad_values(store):
    from workbench.viz.page import StudyPage

    page = StudyPage("label_noise", store=store)
    assert list(page.dials)[:10] == ["flip_rate", "noise_kind", "width", "depth", "lr", "batch_size", "epochs",
                                     "loss", "seed", "dataset"]
    page.panel()
    page.dials["width"].value = 0
    page._on_run()
    assert page.alert.visible and "width=0 is not allowed" in page.alert.object
    assert page.run_button.disabled is False and store.list() == []


@pytest.mark.parametrize("study, tiny, records", [
    ("label_noise", dict(epochs=3, width=16, n_train=300), 4),
    ("sgd_noise", dict(steps=100, eval_every=50, n_train=64, width=16, temperature=1e-4), 3),
    ("precision", dict(epochs=2, width=32, n_train=300, precision="fp8_e5m2"), 3),
    ("grokking", dict(p=7, epochs=20, eval_every=10, width=16), 3),
    ("edge_of_stability", dict(steps=20, sharpness_every=10, n_train=100, width=16), 3),
    ("diffusion", dict(steps=20, eval_every=10, n_samples=100, width=16), 3),
])
def test_every_study_page_runs_and_streams_records(store, study, tiny, records):
    import panel as pn

    from workbench.viz.page import StudyPage

    page = StudyPage(study, store=store)
    page.panel()
    for k, v in tiny.items():
        page.dials[k].value = v
    run_job(page)
    page.tick()  # what the periodic callback does
    assert len(page.buffer.data) == records and page.progress.value == page.buffer.data[page.cls.axis].max()
    assert "Done" in page.status.object and page.last_run.status == "done"
    if study in ("label_noise", "diffusion"):
        assert page.result.objects  # the histogram / samples and curves of the finished run
    if study in ("edge_of_stability", "grokking"):  # the Spectra tab shows what the run stored
        assert any(isinstance(o, pn.pane.HoloViews) for o in page.spectra.objects)


def run_job(page):
    """Press Run and wait for the job (the queue's worker thread trains it)."""
    page._on_run()
    assert page.job is not None and page.jobs.wait(page.job, 300)
    return page.job


def replay(page, job, upto: int):
    """Follow a copy of a finished job that has emitted only its first `upto` events and is still running."""
    from workbench.runs.jobs import Job

    running = Job("replay", job.kind, job.study, job.dials, job.label, job.total, status="running",
                  events=list(job.events[:upto]))
    page.follow(running)
    page.tick()
    return running


def test_the_spectra_tab_updates_while_a_run_trains(store):
    import panel as pn

    from workbench.viz.page import StudyPage

    page = StudyPage("label_noise", store=store)
    page.panel()
    for k, v in dict(epochs=2, width=16, n_train=300, spectra_every=1, loss_snapshots=0).items():
        page.dials[k].value = v
    job = run_job(page)
    assert any(isinstance(e, ArrayKept) and e.name == "weight_eigenvalues" for e in job.events)
    page.spectra.objects = []
    replay(page, job, len(job.events) - 1)  # everything the run sent, before it ended
    assert any(isinstance(o, pn.pane.HoloViews) for o in page.spectra.objects)


def test_the_previous_run_is_drawn_faded_beneath_the_next(store):
    from workbench.viz.page import StudyPage

    page = StudyPage("label_noise", store=store)
    page.panel()
    for k, v in dict(epochs=3, width=16, n_train=300, loss_snapshots=2).items():
        page.dials[k].value = v
    run_job(page)
    page.tick()
    first = page.buffer.data
    assert page.buffer.reference_name == "" and not len(page.buffer.reference.data["epoch"])
    histogram = page.result.objects[0].widget_box[0]  # the per-example loss histogram opens at the end
    assert histogram.value == list(histogram.options.values())[-1] == 3
    page.dials["width"].value = 24
    run_job(page)
    page.tick()
    assert page.buffer.reference_name == "previous run (width=16)"
    assert page.buffer.reference.data["test_acc"].tolist() == first["test_acc"].tolist()
    assert page.buffer.data["test_acc"].tolist() != first["test_acc"].tolist()
    page.compare.value = "default"  # no stored run at the default dials: nothing faded, said nowhere false
    assert page.buffer.reference_name == "" and not len(page.buffer.reference.data["epoch"])
    page.compare.value = "previous"
    assert page.buffer.reference_name.startswith("previous run")
    page.compare.value = "none"
    assert page.buffer.reference_name == ""


def test_diffusion_samples_appear_on_the_page_as_sampling_proceeds(store):
    from workbench.viz.page import StudyPage

    page = StudyPage("diffusion", store=store)
    page.panel()
    for k, v in dict(dataset="bright_dark", steps=4, eval_every=2, n_samples=64, width=16, sample_steps=5).items():
        page.dials[k].value = v
    job = run_job(page)
    steps = [e.coords["sampling_step"].tolist() for e in job.events if isinstance(e, Preview) and e.name == "sampling"]
    assert steps[:5] == [[1, 5], [2, 5], [3, 5], [4, 5], [5, 5]]  # x̂₀ at every sampling step of model 0
    running = replay(page, job, len(job.events))  # everything, but the job has not ended yet
    shown = page.samples.objects[0].object
    assert "step 5/5" in shown.opts.get().kwargs["title"]  # the latest one is drawn
    running.result, running.status = job.result, "done"
    page.tick()
    assert not page.samples.objects and page.result.objects  # the finished run's own plots take over


def test_the_diffusion_page_previews_the_schedule_as_its_dials_move(store):
    import panel as pn

    from workbench.viz.page import StudyPage

    page = StudyPage("diffusion", store=store)
    page.panel()
    def label():
        return page.preview.objects[0].object.get(0).label

    assert isinstance(page.preview.objects[0], pn.pane.HoloViews) and label() == "linear"
    page.dials["schedule"].value = "laplace"
    assert label() == "laplace"
    page.dials["zero_terminal_snr"].value = True  # not for a continuous schedule: said on the page
    assert escape("zero_terminal_snr") in page.preview.objects[0].object


def test_sweep_presets_can_map_per_run_summaries(store):
    from workbench.viz.page import StudyPage

    page = StudyPage("grokking", store=store)
    page.panel()
    sweep = page.sweep
    sweep.preset.value = "precision_vs_weight_decay"
    assert sweep.metric.value == "grok_epoch" and sweep.x.value == "weight_decay"
    assert "diverged" in StudyPage("precision", store=store).sweep.metric.options


def test_a_dial_of_named_choices_gets_its_choices_as_sweep_values(store):
    """A range like 0:0.6:4 is never a float type: picking a dial of named choices fills in its choices."""
    from workbench.viz.page import StudyPage

    sweep = StudyPage("masked_diffusion", store=store).sweep
    assert sweep.x.value == "uniforms" and sweep.x_values.value == "float64,float32,float16,bfloat16"
    sweep.y.value = "mask_schedule"
    assert sweep.y_values.value == "linear,cosine"
    assert "4 × 2 grid" in sweep.status.object and "Cannot sweep" not in sweep.status.object
    sweep.x_values.value = "0.5,2"
    sweep.x.value = "temperature"  # a numeric dial keeps what the field says
    assert sweep.x_values.value == "0.5,2" and "2 × 2 grid" in sweep.status.object
    # on the first drawing a numeric dial's values that do not fit it are replaced: around its default
    assert StudyPage("grokking", store=store).sweep.x_values.value == "56,113,226"  # p: 0:0.6:4 is no modulus


def test_the_sweep_says_its_cost_before_it_runs_and_its_colours_can_be_pinned(store):
    from workbench.viz.page import StudyPage

    page = StudyPage("label_noise", store=store)
    page.panel()
    for k, v in dict(epochs=2, width=16, n_train=300).items():
        page.dials[k].value = v
    sweep = page.sweep
    sweep.x.value, sweep.y.value = "flip_rate", "width"
    sweep.x_values.value, sweep.y_values.value, sweep.seeds.value = "0,0.4", "16", "1"
    assert "2 × 1 grid × 1 seed = **2 runs**" in sweep.status.object
    assert "No stored run of this study to estimate the time from" in sweep.status.object
    run_job(page)  # one stored run: a time per epoch to go by
    sweep._count()
    assert "About " in sweep.status.object and "from 1 stored run of this study, one at a time" in sweep.status.object
    sweep.y.value = "flip_rate"
    assert escape("Cannot sweep: y dial='flip_rate' is not allowed") in sweep.status.object
    sweep.y.value = "width"
    sweep._on_sweep()
    assert sweep.job is not None and page.jobs.wait(sweep.job, 300)
    page.tick()
    assert "Sweep done" in sweep.status.object
    sweep._count()
    assert "Stored already" in sweep.status.object
    table = sweep._table()
    sweep._heatmap(table)  # what the diagram draws (a browser would ask for it)
    auto = sweep._clim
    assert auto[0] <= table["mean"].min() and auto[1] >= table["mean"].max()
    sweep.colour_lo.value, sweep.colour_hi.value = 0.0, 1.0
    sweep._heatmap(table)
    assert sweep._clim == (0.0, 1.0)
    sweep.colour_lo.value = 2.0  # pinned upside down: said, and the range is automatic again
    sweep._heatmap(table)
    assert sweep._clim != (2.0, 1.0) and "low end must be below the high end" in page.alert.object


def test_index_lists_every_study_with_its_headline_figure(store):
    from workbench.viz.page import index_page

    wb.run("grokking", p=7, epochs=20, eval_every=10, width=16, store=store)
    cards = index_page(store).objects[1].objects
    assert len(cards) == len(wb.studies())
    for study, card in zip(wb.studies(), cards):
        text = card.objects[0].object
        assert f"](./{study})" in text and "*Dials:*" not in text  # a link, not a list of 30 dial names
        figure, about = card.objects[1].object, card.objects[2].object
        if study == "grokking":  # its one stored run's test accuracy over epochs, drawn
            points = figure.split('<polyline points="')[1].split('"')[0].split()
            assert len(points) == 3 and 'aria-label="test accuracy over epochs"' in figure
            assert "the newest run" in about and "[1 stored run](./runs?study=grokking)" in about
        else:
            assert "No stored run yet" in figure and "no stored runs" in about


# -- served, in a browser -----------------------------------------------------------------------------------------
POINTS = """() => { let n = 0; for (const m of Bokeh.documents[0].all_models)
                      if (m.type === 'ColumnDataSource') n = Math.max(n, m.get_length() || 0); return n; }"""


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/label_noise")
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    return page


def dial_value(page, name) -> str:
    """The exact value a dial's box shows (a slider's typed box, or the dial's own input)."""
    field = page.locator(f".wb-dial-{name} input:not([type=checkbox])").first
    field.wait_for(timeout=10_000)
    return field.input_value()


def set_input(page, label, value):
    field = page.locator(".bk-input-group", has_text=label).locator("input").first
    field.fill(str(value))
    field.press("Enter")


def test_index_links_to_the_study(server, browser):
    url, _ = server
    page = browser.new_page()
    page.goto(url + "/index")
    page.get_by_role("link", name="Label noise: early learning, then memorization").click()
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    page.close()


def test_slider_run_live_curve_and_cancel(server, browser):
    url, data = server
    page = open_page(browser, url)
    assert dial_value(page, "flip_rate") == "0.4"  # the slider's box shows the exact value
    handle = page.locator(".wb-dial-flip_rate .noUi-handle").first
    handle.focus()
    handle.press("ArrowLeft")
    for _ in range(40):  # the slider -> the server -> the box: a round trip
        if dial_value(page, "flip_rate") == "0.35":
            break
        page.wait_for_timeout(250)
    assert dial_value(page, "flip_rate") == "0.35"
    set_input(page, "epochs", 20000)  # runs until cancelled, however busy the machine
    set_input(page, "width", 128)
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Running: epoch").wait_for(timeout=30_000)
    page.wait_for_function(POINTS.replace("return n;", "return n >= 2;"), timeout=30_000)
    first = page.evaluate(POINTS)
    page.wait_for_function(POINTS.replace("return n;", f"return n > {first};"), timeout=30_000)
    assert page.evaluate(POINTS) > first  # the curve gained points while the run went on
    page.get_by_role("button", name="Cancel").click()
    page.locator(".wb-status").get_by_text("Cancelled").wait_for(timeout=120_000)
    rows = wb.Store(data).list()
    assert [r["status"] for r in rows] == ["cancelled"]
    assert rows[0]["params"]["flip_rate"] == pytest.approx(0.35) and rows[0]["params"]["epochs"] == 20000
    page.screenshot(path=str(data / "label_noise.png"))
    page.close()


def test_a_bad_value_shows_an_error_and_the_server_keeps_serving(server, browser):
    url, data = server
    page = open_page(browser, url)
    set_input(page, "width", 0)
    page.get_by_role("button", name="Run").click()
    page.get_by_text("width=0 is not allowed").wait_for(timeout=15_000)
    assert urllib.request.urlopen(url + "/label_noise", timeout=10).status == 200
    other = open_page(browser, url)  # another session still gets a working page
    other.close()
    page.close()


OUTSIDE = """() => { const out = [];
  (function walk(root) {
    for (const e of root.querySelectorAll('a[href], img[src]')) {
      const url = e.getAttribute('href') || e.getAttribute('src');
      if (url.includes('evil.example')) out.push(e.outerHTML);
    }
    for (const e of root.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot);
  })(document);
  return out; }"""


def test_a_served_page_reads_files_only_from_the_servers_data_folder(store, tmp_path):
    import numpy as np

    from workbench.viz.page import served_file

    folder = store.root / "user_data"
    folder.mkdir(parents=True)
    np.savez(folder / "mine.npz", X=np.zeros((10, 3)), y=np.zeros(10))
    outside = tmp_path / "secret.npz"
    np.savez(outside, X=np.zeros((10, 3)), y=np.zeros(10))
    assert served_file("data_path", "mine.npz", store) == str((folder / "mine.npz").resolve())
    said = set()
    for bad in [str(outside), "../../secret.npz", "~/secret.npz", "missing.npz", "mine"]:
        with pytest.raises(wb.ConfigError) as e:
            served_file("data_path", bad, store)
        said.add(e.value.allowed)
    assert len(said) == 1 and "mine.npz" in said.pop()  # one message whatever exists: nothing to probe with


def _npz_bytes(**arrays) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_an_uploaded_data_set_is_checked_kept_by_content_and_chosen(store, monkeypatch):
    import numpy as np

    from workbench.viz.page import StudyPage, served_file, user_data
    from workbench.viz.upload import DataUpload

    page = StudyPage("label_noise", store=store)
    up = DataUpload(page, user_data(store))
    rng = np.random.default_rng(0)
    good = _npz_bytes(X=rng.normal(size=(120, 5)), y=np.arange(120) % 3)
    up.receive("my data [v2].npz", good)
    folder = user_data(store)
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 1 and kept[0].endswith("-my_data_v2.npz"), kept  # content-addressed, a safe name
    assert page.dials["dataset"].value == "npz" and page.dials["data_path"].value == kept[0]
    assert "120 examples, 5 features, 3 classes" in up.message.object
    assert served_file("data_path", kept[0], store) == str((folder / kept[0]).resolve())  # a run finds it
    up.receive("again.npz", good)  # the same bytes under another name: a second name, no second copy of others
    assert len(list(folder.iterdir())) == 2 and up.widget.value == {}

    page.dials["data_path"].value = kept[0]
    crafted = "[x](http://evil.example/a).npz"
    for name, content, said in [
        ("gaps.npz", _npz_bytes(X=np.zeros((10, 2)), y=np.array([0, 2] * 5)), "every class present"),
        ("notes.txt", good, "an .npz file"),
        ("broken.npz", good[: len(good) // 2], "a readable .npz file"),
        (crafted, _npz_bytes(X=np.zeros((10, 2))), "arrays 'X' and 'y'"),
    ]:
        up.receive(name, content)
        shown = up.message.object.replace("\\", "")
        assert "Not uploaded" in shown and said in shown, shown
        assert page.dials["data_path"].value == kept[0]  # the dials stay where they were
    assert "](http" not in up.message.object  # a crafted name shows as text (escaped), never as a link
    assert len(list(folder.iterdir())) == 2  # nothing refused was kept, no temporary file left

    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_BYTES", "1000")
    big = DataUpload(page, folder)
    big.receive("big.npz", good)
    assert "a file of at most 1,000 bytes" in big.message.object.replace("\\", "")
    monkeypatch.delenv("WORKBENCH_MAX_UPLOAD_BYTES")
    monkeypatch.setenv("WORKBENCH_QUOTA_UPLOADS", str(len(good) * 2 + 10))
    up.receive("third.npz", _npz_bytes(X=rng.normal(size=(120, 5)), y=np.arange(120) % 3))
    assert "WORKBENCH_QUOTA_UPLOADS" in up.message.object.replace("\\", "") and len(list(folder.iterdir())) == 2


def test_the_upload_box_drops_a_transfer_that_grows_past_its_limit_on_the_server():
    from types import SimpleNamespace

    from workbench.viz.upload import CappedFileDropper

    refused = []
    w = CappedFileDropper(100, lambda name, size: refused.append((name, size)))

    def chunk(i, n, data, name="f.npz"):
        w._process_event(SimpleNamespace(event_name="upload_event", data=dict(
            name=name, chunk=i, total_chunks=n, data=data, type="application/octet-stream")))
    chunk(1, 3, b"x" * 60)
    chunk(2, 3, b"x" * 60)  # past 100 bytes: dropped, though the browser said 3 chunks
    chunk(3, 3, b"x" * 10)  # the rest of a dropped transfer is ignored
    assert refused == [("f.npz", 120)] and w.value == {} and w._file_buffer == {}
    chunk(5, 6, b"y")  # a chunk of a transfer that never started
    chunk(1, 2, b"a" * 40)
    chunk(2, 2, b"b" * 40)
    assert w.value == {"f.npz": b"a" * 40 + b"b" * 40}


def test_a_served_page_refuses_a_path_outside_its_data_folder(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    for path in ("/etc/hostname", "../../nothing-here.npz"):
        page.goto(f"{url}/label_noise?dataset=npz&data_path={path}")
        page.get_by_role("button", name="Run").click()
        page.locator(".wb-error").get_by_text("the name of an .npz file in its data folder").wait_for(timeout=30_000)
    page.close()


def test_a_visitor_uploads_a_data_set_and_trains_on_it(server, browser, tmp_path):
    import numpy as np

    url, data = server
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 6))
    np.savez(tmp_path / "mine.npz", X=x, y=(x[:, 0] > 0).astype(int) + (x[:, 1] > 0))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/label_noise?epochs=3&width=16")
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    page.locator(".wb-upload input[type=file]").set_input_files(str(tmp_path / "mine.npz"))
    said = page.locator(".wb-upload-status")
    said.get_by_text("Uploaded mine.npz: 240 examples, 6 features, 3 classes").wait_for(timeout=60_000)
    said.get_by_text("n_train to 160").wait_for(timeout=5_000)  # the default 1,200 is more than the file holds
    stored = [p.name for p in (data / "user_data").iterdir()]
    assert len(stored) == 1 and stored[0].endswith("-mine.npz") and dial_value(page, "data_path") == stored[0]
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Done. Run").wait_for(timeout=60_000)
    run = [r for r in wb.Store(data).list() if r["params"].get("data_path")][0]
    assert run["status"] == "done" and run["params"]["dataset"] == "npz" and run["params"]["n_train"] == 160
    assert stored[0] in run["params"]["data_path"]

    (tmp_path / "bad.npz").write_bytes(b"<img src=http://evil.example/i.png> not a zip")
    page.locator(".wb-upload input[type=file]").set_input_files(str(tmp_path / "bad.npz"))
    said.get_by_text("Not uploaded").wait_for(timeout=60_000)
    said.get_by_text("a readable .npz file").wait_for(timeout=5_000)
    assert page.evaluate(OUTSIDE) == []
    assert len(list((data / "user_data").iterdir())) == 1  # nothing of the refused file kept
    page.close()


def test_markdown_in_a_bad_value_shows_as_text_never_as_a_link_or_image(server, browser):
    from urllib.parse import quote

    url, _ = server
    crafted = "[click](http://evil.example/x) ![i](http://evil.example/i.png) **bold**"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/label_noise?noise_kind={quote(crafted)}")
    alert = page.locator(".wb-error")
    alert.get_by_text("not a value of this dial").wait_for(timeout=30_000)
    alert.get_by_text(crafted).wait_for(timeout=5_000)  # shown as typed
    assert page.evaluate(OUTSIDE) == []  # no live link or image pointing off the machine
    page.close()


TITLES = "() => [...Bokeh.documents[0].all_models].filter(m => m.type === 'Title').map(m => m.text)"


def test_sweep_mode_fills_the_phase_diagram_and_a_click_shows_a_cell(server, browser):
    url, data = server
    page = open_page(browser, url)
    set_input(page, "epochs", 6)
    set_input(page, "n train", 300)
    set_input(page, "width", 32)
    page.locator(".bk-tab", has_text="Sweep").click()
    set_input(page, "x values", "0,0.5")
    set_input(page, "y values", "16,32")
    page.get_by_role("button", name="Sweep").click()
    page.get_by_text("Sweep done").wait_for(timeout=60_000)
    assert any("mean over seeds" in t for t in page.evaluate(TITLES))
    heat = [c for c in page.locator(".bk-Canvas").all() if c.is_visible()][0].bounding_box()
    page.mouse.click(heat["x"] + heat["width"] * 0.7, heat["y"] + heat["height"] * 0.3)
    page.wait_for_function(TITLES.replace("map(m => m.text)", "some(m => m.text.startsWith('clean test accuracy at flip_rate='))"),
                           timeout=15_000)
    rows = wb.Store(data).list(kind="sweep")
    assert rows and rows[0]["status"] == "done" and rows[0]["params"]["grid"] == {"flip_rate": [0.0, 0.5],
                                                                                   "width": [16, 32]}
    page.close()


def test_the_url_holds_the_dials(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/label_noise?width=48&epochs=7")
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    assert page.locator(".bk-input-group", has_text="width").locator("input").first.input_value() == "48"
    set_input(page, "epochs", 9)  # moving a dial rewrites the URL: the link reproduces the page
    page.wait_for_function("() => window.location.search.includes('epochs=9')", timeout=10_000)
    assert "width=48" in page.evaluate("() => window.location.search")
    page.goto(url + "/label_noise?width=48&noise_seed=-1&init_seed=5")
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    # negative integers (the purpose seeds' -1, "from seed") load like any value: nothing said on the page
    assert page.locator(".bk-input-group", has_text="init seed").locator("input").first.input_value() == "5"
    assert page.locator(".bk-input-group", has_text="noise seed").locator("input").first.input_value() == "-1"
    assert page.get_by_text("Bad URL parameter").count() == 0
    page.goto(url + "/label_noise?epochs=many")  # a value no dial can take: said on the page, naming the dial
    page.get_by_text("Bad URL parameter").wait_for(timeout=30_000)
    said = page.get_by_text("not a value of this dial").inner_text()
    assert "epochs='many': not a value of this dial (an integer in [1, 100000])" in said, said
    page.close()


def test_the_run_browser_lists_and_overlays_runs(server, browser):
    url, data = server
    for flip in (0.0, 0.3):  # two stored runs in the server's data folder
        wb.run("label_noise", epochs=3, width=16, n_train=200, flip_rate=flip, progress=False, store=wb.Store(data))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/runs")
    page.locator(".tabulator-row").first.wait_for(timeout=30_000)
    assert page.locator(".tabulator-row").count() >= 2
    for i in range(2):
        page.locator(".tabulator-row").nth(i).locator("input[type=checkbox]").first.check()
    page.wait_for_function(POINTS.replace("return n;", "return n >= 3;"), timeout=30_000)  # curves drawn
    with page.expect_download() as dl:
        page.get_by_role("button", name="CSV").click()
    text = open(dl.value.path()).read()
    assert text.startswith("run,study,axis,step,metric,value") and "test_acc" in text
    with page.expect_download() as dl:  # the overlay as PNG: the plot's own save tool, drawn by the browser
        page.locator(".bk-tool-icon-save").first.click()
    assert open(dl.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert dl.value.suggested_filename.startswith("runs_") and dl.value.suggested_filename.endswith(".png")
    page.close()


def test_a_shared_link_opens_the_same_result_in_another_browser(server, browser):
    url, data = server
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = first.new_page()
    page.goto(url + "/label_noise?epochs=3&width=16&n_train=200&flip_rate=0.1")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Done. Run").wait_for(timeout=60_000)
    run_id = wb.Store(data).list()[0]["id"]
    page.get_by_text(run_id).first.wait_for(timeout=5_000)
    other = browser.new_context(viewport={"width": 1400, "height": 1000})  # another browser: nothing shared but the link
    seen = other.new_page()
    seen.goto(page.url)
    seen.get_by_text("Stored result of these dials").wait_for(timeout=30_000)
    seen.get_by_text(run_id).first.wait_for(timeout=5_000)  # the same cached run, shown without pressing Run
    seen.wait_for_function(POINTS.replace("return n;", "return n >= 4;"), timeout=30_000)
    seen.wait_for_function(TITLES.replace("map(m => m.text)", "some(m => m.text.startsWith('per-example loss'))"),
                           timeout=30_000)  # the run's own figure, drawn off the event loop, then put on the page
    seen.locator(".bk-tab", has_text="Jobs").click()  # the other session's job is in the shared queue
    seen.locator(".tabulator-row", has_text=run_id).wait_for(timeout=15_000)
    first.close()
    other.close()


def test_every_session_sees_the_queue_and_can_cancel_a_job(server, browser):
    url, data = server
    runner = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    runner.goto(url + "/label_noise?epochs=100000&eval_every=20&width=128&seed=7")  # trains until cancelled
    runner.get_by_role("button", name="Run").click()
    runner.get_by_text("Running: epoch").wait_for(timeout=60_000)
    watcher = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    watcher.goto(url + "/grokking")
    watcher.locator(".bk-tab", has_text="Jobs").click()
    row = watcher.locator(".tabulator-row", has_text="running")
    row.wait_for(timeout=15_000)
    assert "seed=7" in row.inner_text()
    row.locator(".wb-cancel").click()
    runner.locator(".wb-status").get_by_text("Cancelled").wait_for(timeout=120_000)  # a busy machine: generous
    watcher.locator(".tabulator-row", has_text="seed=7").get_by_text("cancelled").wait_for(timeout=60_000)
    assert [r["status"] for r in wb.Store(data).list() if r["params"].get("seed") == 7] == ["cancelled"]
    runner.context.close()
    watcher.context.close()


@pytest.mark.parametrize("study", wb.studies())
def test_every_study_page_builds_its_bokeh_models(store, study):
    """Regression: a dial's widget that Bokeh refuses (a FloatInput step of 1e-25 for adam_eps) left the whole
    grokking page blank on the server. get_root validates every model the browser would receive."""
    from bokeh.document import Document

    from workbench.viz.page import StudyPage

    page = StudyPage(study, store=store)
    root = page.panel().get_root(Document())
    assert root is not None
    for name, widget in page.dials.items():
        value = widget.value
        assert value == page.cls.param[name].default or (value == "" and page.cls.param[name].default in (None, "")), name


def test_every_page_says_its_finding_and_its_claims_verdicts(store):
    import json

    from workbench.reproduce import CLAIMS
    from workbench.studies import get as get_study
    from workbench.viz.page import claims_line

    for study in wb.studies():
        cls = get_study(study)
        assert cls.finding and set(cls.claims) <= set(CLAIMS), study
    assert "not yet checked here" in claims_line(get_study("label_noise"), store)
    folder = store.root / "reports" / "reproduce"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps([{"key": "early_learning", "status": "pass", "profile": "quick"},
                                                     {"key": "sgd_temperature", "status": "fail", "profile": "full"},
                                                     {"key": "early_learning", "status": "fail", "profile": "full"}]))
    said = claims_line(get_study("label_noise"), store)
    assert "**reproduced (quick profile)**, **not reproduced here (full profile)**" in said  # each profile's
    assert "not reproduced here (full profile)" in claims_line(get_study("sgd_noise"), store)
