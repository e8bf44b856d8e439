"""JupyterLab as a researcher uses it, with no network: a real `jupyter lab` bound to 127.0.0.1, a notebook that
trains a small run, shows its curves and the study's app inline; Run pressed inside the notebook's output streams
live points. Bokeh, HoloViews and Panel must load from the notebook itself (inlined), never from a CDN."""
import json
import os
import subprocess
import sys
import time
import urllib.request
import warnings

import nbformat
import pytest

from workbench.cli import ensure_kernel

from .served import CHROMIUM, SCREENSHOTS, Console, audit, free_port

CELLS = [
    "import workbench as wb",
    "run = wb.run('label_noise', epochs=3, width=16, n_train=200, progress=False)\nwb.viz.curves(run)",
    "wb.viz.app('label_noise', epochs=100000, eval_every=100, width=16, n_train=200, flip_rate=0.3)",  # Cancel ends it
]
SOURCES = """() => [...Bokeh.documents].map(d => [...d.all_models].filter(m => m.type === 'ColumnDataSource')
                   .map(m => [Object.keys(m.data).slice(0, 3).join(','), m.get_length()]))"""
POINTS = """() => { let n = 0; for (const d of Bokeh.documents) for (const m of d.all_models)
                      if (m.type === 'ColumnDataSource') n = Math.max(n, m.get_length() || 0); return n; }"""


@pytest.fixture
def lab(tmp_path, data_root):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make browser installs it)")
    kernel = ensure_kernel("workbench")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python (workbench)", "language": "python"}
    nbformat.write(nb, tmp_path / "check.ipynb")
    port, token = free_port(), "wbtest"
    env = {**os.environ, "WORKBENCH_DATA": str(data_root), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrun")}
    env.pop("WORKBENCH_RESOURCES", None)  # the default: inline
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(proc.stdout.read().decode(errors="replace")[-3000:])
    yield url, token, tmp_path / "jrun"
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def kernel_idle(url: str, token: str, timeout: float = 240) -> None:
    """Wait until the notebook's kernel has started and is idle (the server's own sessions API)."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=30) as r:
            seen = [s for s in json.load(r) if s.get("path", "").endswith("check.ipynb")]
        if seen and seen[0].get("kernel", {}).get("execution_state") == "idle":
            return
        time.sleep(0.5)
    raise AssertionError(f"the notebook's kernel did not become idle in {timeout:.0f} s: {seen}")


def ask_kernel(url: str, token: str, runtime, code: str, timeout: float = 120) -> str:
    """Run `code` in the notebook's kernel from a second client (as `jupyter console --existing` would) and return
    what it printed: the kernel's own state, which the page cannot show."""
    from jupyter_client import BlockingKernelClient

    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=30) as r:
        kernel = next(s["kernel"]["id"] for s in json.load(r) if s.get("path", "").endswith("check.ipynb"))
    client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel}.json"))
    client.load_connection_file()
    client.start_channels()
    printed = []
    try:
        reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda m: printed.append(
            m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(printed)


# ipykernel 7 can run comm messages on a subshell thread (JupyterLab 4.4+ sends them there); the app's client comm
# must be routed to the main shell (OneThreadRow), or Panel handles clicks beside its periodic callback
ROUTED = """from workbench.viz.page import on_main_shell
k = get_ipython().kernel
print(bool(getattr(k, '_supports_kernel_subshells', False)),
      sum(getattr(c, '_reply_subshell_for', None) is on_main_shell for c in k.comm_manager.comms.values()))"""


def shown_tracebacks(page) -> list[str]:
    """The Python tracebacks the notebook's outputs show (Panel puts an error raised while it applies the
    browser's changes to the kernel's document into the cell's output), kept whole beside the screenshot.

    One showed above the running app in 2 of 4 full `make test` runs on 2026-12-07, and in most runs of this test
    beside CPU hogs: `ValueError: failed to validate Line(...).line_color`. JupyterLab handled the app's comm
    messages on a kernel subshell (a second thread) while the page's periodic callback ran on the main one; both
    sent the same pending changes, and the browser's echo of the figures it already had was refused. The page's
    OneThreadRow now keeps its comm on the main shell (workbench/viz/page.py)."""
    shown = [t for t in page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                                      ".map(e => e.textContent)") if "Traceback (most recent call last)" in t]
    kept = SCREENSHOTS / "jupyterlab-tracebacks.txt"
    kept.unlink(missing_ok=True)  # an earlier run's
    if shown:
        kept.write_text("\n\n".join(shown))
    return shown


def test_the_notebook_shows_curves_and_the_app_runs_inline(lab):
    from playwright.sync_api import sync_playwright

    url, token, runtime = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console = Console(page)
        cdn = []  # scripts asked of another machine (Panel's component stylesheets still name its CDN: they fail
        # offline without blanking anything, and are left out here)
        page.on("request", lambda r: cdn.append(r.url) if r.resource_type == "script" and not r.url.startswith(
            ("http://127.0.0.1", "data:", "blob:")) else None)
        page.goto(f"{url}/lab/tree/check.ipynb?token={token}")
        page.locator(".jp-Notebook").wait_for(timeout=120_000)
        kernel_idle(url, token)  # a Run All pressed while the kernel still starts is lost
        for attempt in range(3):  # as a person would: a menu that did not take (the lab still settling) is used again
            page.locator(".jp-Notebook").click()
            page.keyboard.press("Escape")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            try:  # the first cell ran: its prompt holds a number
                page.locator(".jp-InputPrompt", has_text="[1]").first.wait_for(timeout=60_000)
                break
            except Exception:  # noqa: BLE001 - a Playwright timeout
                if attempt == 2:
                    raise
                warnings.warn("Run All Cells did not take; used the menu again")
        outputs = page.locator(".jp-OutputArea-output")
        run_button = page.locator(".jp-OutputArea-output").get_by_role("button", name="Run", exact=True)
        run_button.wait_for(timeout=300_000)  # the app drew inline: its JavaScript loaded with no network
        assert "Bokeh or Panel library is missing" not in page.inner_text("body")
        page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => "
                               "m.type === 'Title' && m.text === 'Accuracy'))", timeout=60_000)
        first = audit(page, "the notebook's curves", at_least=1)
        assert any(f["title"] == "Accuracy" for f in first)
        before = page.evaluate(POINTS)
        run_button.scroll_into_view_if_needed()
        try:
            # a click made before the widget's comm to the kernel is open is lost (Panel in JupyterLab); a person
            # clicks again when nothing happens, and so does this test: the run must start within three clicks
            for attempt in range(3):
                run_button.click(timeout=120_000)
                try:
                    outputs.get_by_text("Running: epoch").first.wait_for(timeout=60_000 if attempt < 2 else 120_000)
                    break
                except Exception:  # noqa: BLE001 - a Playwright timeout
                    if attempt == 2:
                        raise
                    warnings.warn("the app's Run click did not start a run; clicked again")
            try:
                page.wait_for_function(POINTS.replace("return n;", f"return n > {max(before, 4)};"), timeout=120_000)
            except Exception:  # what the browser holds, for the failure message
                raise AssertionError(f"no live points beyond {before}: " + str(page.evaluate(SOURCES))) from None
        finally:  # what the notebook showed, whatever happened
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "jupyterlab.png"), full_page=True)
            running = shown_tracebacks(page)
        assert not running, f"the notebook showed a traceback while the app ran: {running[-1].strip()[-600:]}"
        subshells, routed = ask_kernel(url, token, runtime, ROUTED).split()
        assert subshells == "False" or int(routed) >= 1, \
            "the kernel runs comm messages on subshells, and the app's comm is not kept on the main shell"
        # a busy renderer (live curves, two cores shared with the kernel and the other test processes) can hold the
        # click's own completion past Playwright's 30 s default after the click itself went through: generous here
        outputs.get_by_role("button", name="Cancel", exact=True).click(timeout=120_000)
        outputs.get_by_text("Cancelled").first.wait_for(timeout=240_000)  # a busy machine: generous
        cancelled = shown_tracebacks(page)  # again, with the cancel's (the outputs keep every one shown)
        assert not cancelled, f"the notebook showed a traceback after the cancel: {cancelled[-1].strip()[-600:]}"
        assert not cdn, f"scripts requested off this machine: {cdn[:5]}"
        assert not [e for e in console.errors if "bokeh" in e.lower() or "panel" in e.lower()], console.errors
        browser.close()
