"""Every study page as a person sees it, in headless Chromium: before and after a tiny run, its Spectra tab and a
tiny sweep with a clicked cell. Every figure on screen must have drawn glyphs with data, axis ranges covering that
data, and coloured pixels; the console must stay free of errors. Screenshots land in data/reports/screenshots/."""
from urllib.parse import urlencode

import pytest

import workbench as wb
from workbench.studies import get as get_study

from .served import FIGURES, Console, audit, browser, server  # noqa: F401 - fixtures

#: per study: the sweep's x dial and two values, its y dial and one value
SWEEPS = {
    "label_noise": ("flip_rate", "0,0.4", "width", "16"),
    "precision": ("flip_rate", "0,0.4", "width", "16"),
    "grokking": ("weight_decay", "0,1", "p", "11"),
    "edge_of_stability": ("lr", "0.05,0.2", "width", "16"),
    "sgd_noise": ("temperature", "0.001,0.01", "alpha", "1"),
    "diffusion": ("eta", "0,1", "width", "16"),
    "masked_diffusion": ("temperature", "0.5,1", "levels", "16"),
}
#: studies whose tiny run stores spectra (the Spectra tab draws them)
SPECTRA = {"label_noise", "edge_of_stability", "grokking"}
#: studies whose page draws figures beyond the curves once a run ends (loss histograms, samples)
EXTRAS = {"label_noise", "diffusion", "masked_diffusion"}


def test_every_study_has_a_sweep_here():
    assert set(SWEEPS) >= set(wb.studies()), "a new study needs its tiny sweep in SWEEPS"


def fill(page, css, value):
    field = page.locator(f"{css} input").first
    field.fill(str(value))
    field.press("Enter")


CARDS = """() => {
  const out = [];
  function walk(root) {  // Panel draws each pane in a shadow root of its own
    for (const f of root.querySelectorAll('svg.wb-card-figure, .wb-card-empty')) {
      const b = f.getBoundingClientRect(), line = f.querySelector('polyline');
      out.push({label: f.getAttribute('aria-label') || f.textContent, box: [b.x, b.y + window.scrollY, b.width, b.height],
                points: line ? line.getAttribute('points').trim().split(/ +/).length : 0});
    }
    for (const e of root.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot);
  }
  walk(document);
  return out;
}"""


def index_cards(url, browser, shot):
    from .served import SCREENSHOTS, coloured_pixels

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)
    page.goto(url + "/index")
    page.get_by_role("link", name=get_study("label_noise").title).wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    cards = page.evaluate(CARDS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
    for c in cards:
        x, y, w, h = c["box"]
        assert w > 200 and h > 50, c
        c["pixels"] = coloured_pixels(page.screenshot(clip={"x": x, "y": y, "width": w, "height": h}, full_page=True))
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400, "the index scrolls sideways"
    assert not console.errors, console.errors
    page.close()
    assert len(cards) == len(wb.studies()), cards
    return cards


def test_the_index_says_where_no_run_is_stored_yet(server, browser):
    url, _ = server
    for card in index_cards(url, browser, "index-before"):
        assert "No stored run yet" in card["label"] and card["points"] == 0, card


@pytest.mark.parametrize("study", sorted(SWEEPS))
def test_every_figure_on_the_page_is_drawn(server, browser, study):
    url, _ = server
    cls = get_study(study)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)
    page.goto(f"{url}/{study}?{urlencode(cls.tiny)}")
    page.get_by_role("button", name="Run").wait_for(timeout=60_000)
    audit(page, f"{study} on load", at_least=0, shot=f"{study}-before")
    assert not [w for w in console.warnings if "could not set initial ranges" in w], "blank figures on load"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400, "the page scrolls sideways"

    page.get_by_role("button", name="Run").click()
    page.locator(".wb-status").get_by_text("Done").wait_for(timeout=180_000)
    page.get_by_text("Drawing the run's figures").wait_for(state="detached", timeout=60_000)
    run_tab = audit(page, f"{study} after a run", at_least=1 + (study in EXTRAS), shot=f"{study}-after")
    assert not page.get_by_text("Could not draw the figures").count(), f"{study}: a figure failed to draw"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400, "the page scrolls sideways"
    titles = [f["title"] for f in run_tab]
    assert any(t in titles for t in cls.curves), f"no curve panel among {titles}"

    page.locator(".bk-tab", has_text="Spectra").click()
    audit(page, f"{study} Spectra tab", at_least=int(study in SPECTRA), shot=f"{study}-spectra")

    page.locator(".bk-tab", has_text="Sweep").click()
    x, xv, y, yv = SWEEPS[study]
    page.locator(".wb-sweep-x select").select_option(x)
    page.locator(".wb-sweep-y select").select_option(y)
    fill(page, ".wb-sweep-x-values", xv)
    fill(page, ".wb-sweep-y-values", yv)
    fill(page, ".wb-sweep-seeds", "1")
    page.get_by_text("2 × 1 grid × 1 seed = 2 runs").wait_for(timeout=10_000)  # said before pressing Sweep
    page.get_by_role("button", name="Sweep").click()
    page.get_by_text("Sweep done").wait_for(timeout=180_000)
    heat = next(f for f in page.evaluate(FIGURES)
                if "mean over seeds" in f["title"])
    bx, by, bw, bh = heat["box"]
    page.mouse.click(bx + bw * 0.3, by + bh * 0.5 - page.evaluate("() => window.scrollY"))  # the first x value
    clicked = f"() => [...Bokeh.documents[0].all_models].some(m => m.type === 'Title' && m.text.includes(' at {x}='))"
    page.wait_for_function(clicked, timeout=15_000)
    sweep_tab = audit(page, f"{study} Sweep tab, a cell clicked", at_least=2, shot=f"{study}-sweep")
    assert any(f" at {x}=" in f["title"] for f in sweep_tab), [f["title"] for f in sweep_tab]
    assert not console.errors, console.errors
    page.close()


def test_the_index_draws_each_studys_headline_from_its_stored_runs(server, browser):
    """After the pages above ran their tiny runs: every card draws its study's headline curve."""
    url, _ = server
    cards = index_cards(url, browser, "index-after")
    for study, card in zip(wb.studies(), cards):
        cls = get_study(study)
        assert card["label"] == f"{cls.label(cls.headline)} over {cls.axis}s", card
        assert card["points"] >= 2 and card["pixels"] > 100, card  # a drawn curve, in colour


def test_a_saved_figure_draws_offline_without_errors(browser, tmp_path):
    """The report's figures and the run browser's HTML export are single files for a machine without the network:
    opened with every request off the disk refused, each panel draws and the console stays clean (Panel's layout
    stylesheets, which hv.save links from its CDN, are inlined)."""
    import holoviews as hv

    from workbench.viz.plots import standalone_html

    fig = (hv.Bars([("plain", 0.57), ("transition-aware", 1.0)], "loss", "share").opts(title="bars")
           + hv.Curve(([0, 1, 2, 3], [3.0, 2.0, 1.5, 1.2]), "step", "loss").opts(title="curve")).cols(1)
    path = tmp_path / "figure.html"
    path.write_text(standalone_html(fig))
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    console, asked = Console(page), []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (asked.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    drawn = audit(page, "a saved figure", at_least=2, shot="saved-figure")
    assert {f["title"] for f in drawn} == {"bars", "curve"}
    assert not asked and not console.errors, (asked, console.errors)
    page.close()
