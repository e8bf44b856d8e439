"""A study from another package: installed into an environment of its own (pip install --target), registered by a
`workbench.studies` entry point, it is on the command line, in the notebooks and on the dashboard without a line
of the workbench edited. The package's study is the worked example of docs/adding-a-study.md."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from .served import CHROMIUM, Console, audit, free_port

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-study.md"

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "wb-demo-studies"
version = "0.1.0"

[project.entry-points."workbench.studies"]
noisy_regression = "wb_demo_studies.noisy_regression"
broken_one = "wb_demo_studies.not_there"

[tool.setuptools]
packages = ["wb_demo_studies"]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The package built and installed (pip install --target: this environment's own site-packages untouched);
    returns the environment variables that put it on the path, with a store of its own."""
    root = tmp_path_factory.mktemp("plugin")
    match = re.search(r"```python\n# file: (\w+)\.py\n(.*?)```", DOC.read_text(), re.S)
    assert match and match.group(1) == "noisy_regression"
    pkg = root / "src"
    (pkg / "wb_demo_studies").mkdir(parents=True)
    (pkg / "wb_demo_studies" / "__init__.py").write_text("")
    (pkg / "wb_demo_studies" / "noisy_regression.py").write_text(match.group(2))
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    target = root / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(pkg)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "noisy_regression" not in _studies_here()  # only where the package is installed
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])),
            "WORKBENCH_DATA": str(root / "data")}


def _studies_here():
    import workbench as wb

    return wb.studies()


def _workbench(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_an_installed_study_is_listed_and_runs_from_the_command_line(site):
    out = _workbench(site, "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["study"]: r for r in json.loads(out.stdout)}
    assert rows["noisy_regression"]["module"] == "wb_demo_studies.noisy_regression"
    assert "label_noise" in rows  # the package's own studies are all still there
    # the plugin that fails to import is named, and harms nothing else
    assert "broken_one" in out.stderr and "not_there" in out.stderr
    table = _workbench(site, "list").stdout
    assert re.search(r"noisy_regression .*wb_demo_studies\.noisy_regression", table), table

    run = _workbench(site, "run", "noisy_regression", "--steps", "40", "--input-noise", "0.5", "--json")
    assert run.returncode == 0, run.stderr
    rec = json.loads(run.stdout)
    assert rec["status"] == "done" and rec["params"]["input_noise"] == 0.5
    bad = _workbench(site, "run", "noisy_regression", "--input-noise", "30")
    assert bad.returncode == 2 and "input_noise" in bad.stderr


def test_an_installed_study_runs_as_a_notebook(site, tmp_path):
    from workbench.cli import ensure_kernel

    ensure_kernel("workbench")
    out = tmp_path / "executed.ipynb"
    done = _workbench(site, "notebook", "run", "noisy_regression", "-p", "steps", "30", "-p", "eval_every", "10",
                      "--output", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    text = "\n".join(str(o.get("text", "")) for c in nbformat.read(out, as_version=4).cells
                     for o in c.get("outputs", []))
    assert re.search(r"test_loss\s+final [\d.e+-]+\s+best [\d.e+-]+ at \d+", text), text


def test_an_installed_study_has_a_dashboard_page_that_trains_and_draws(site, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--address", "127.0.0.1", "--port",
                             str(port)], env=site, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if urllib.request.urlopen(url + "/noisy_regression", timeout=60).status == 200:
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            console = Console(page)
            page.goto(url + "/index")
            page.get_by_role("link", name="Input noise as ridge regression").wait_for(timeout=60_000)
            page.goto(url + "/noisy_regression?steps=60&eval_every=10")
            page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            assert page.get_by_text("Input noise as ridge regression").count() >= 1
            page.get_by_role("button", name="Run").click()
            page.locator(".wb-status").get_by_text("Done").wait_for(timeout=180_000)
            page.get_by_text("Drawing the run's figures").wait_for(state="detached", timeout=60_000)
            titles = [f["title"] for f in audit(page, "a plugin study's page after a run", at_least=1,
                                                shot="plugin-study-after")]
            assert "Loss" in titles, titles
            assert not console.errors, console.errors
            b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
