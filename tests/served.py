"""The dashboard served by `panel serve` and driven in headless Chromium, and what a person sees on it: every
drawn figure is audited for glyphs with data, axis ranges that cover the data, and coloured pixels."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "data" / "reports" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard(data: Path, **env):
    """`panel serve apps/*.py` on a free loopback port with its store at `data` (and these environment variables),
    until the block ends: yields its URL. Its output goes to a file beside the store (a pipe nobody reads would
    stall a server that logs much), shown if it does not start."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make browser installs it)")
    port = free_port()
    log = data.parent / f"{data.name}-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "serve", *sorted(str(p) for p in (REPO / "apps").glob("*.py")),
             "--address", "127.0.0.1",
             "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}", "--index", "index"],
            cwd=REPO, env={**os.environ, "WORKBENCH_DATA": str(data), **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # generous: the first page build can take many seconds on a busy machine, and a request given up on early
        # still costs the server its build (short timeouts then only pile requests up)
        deadline, ready = time.monotonic() + 300, False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = urllib.request.urlopen(url + "/label_noise", timeout=60).status == 200
            except OSError:
                time.sleep(0.5)
        if not ready:
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # a busy machine: not what the tests are about
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("appdata")
    with dashboard(data) as url:
        yield url, data


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


class Console:
    """What a page logged: errors (console.error and uncaught exceptions) and warnings."""

    def __init__(self, page):
        self.errors, self.warnings = [], []
        page.on("console", self._on)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _on(self, msg):
        if msg.type == "error":
            self.errors.append(msg.text)
        elif msg.type == "warning":
            self.warnings.append(msg.text)


# Every Bokeh plot laid out on screen (zero-size ones sit in hidden tabs): its title, its box on the page, its
# numeric ranges and, per visible glyph renderer, how many points it has and the extent of its finite data.
FIGURES = """() => {
  const roots = Bokeh.index instanceof Map ? [...Bokeh.index.values()] : Object.values(Bokeh.index);
  const out = [], seen = new Set();
  const finite = (a) => Array.from(a ?? []).filter((v) => typeof v === 'number' && Number.isFinite(v));
  const drawable = (a) => Array.from(a ?? []).filter((v) => typeof v === 'string' || Number.isFinite(v)).length;
  const extent = (a) => a.length ? [Math.min(...a), Math.max(...a)] : null;
  const range = (r) => (r.type === 'DataRange1d' || r.type === 'Range1d') ? [r.start, r.end] : null;
  const field = (glyph, name) => {
    const p = glyph.properties[name];
    if (!p) return null;
    const v = p.get_value();
    return v && typeof v === 'object' && 'field' in v ? v.field : null;
  };
  function walk(v) {
    if (seen.has(v)) return;
    seen.add(v);
    const type = v.model.type;
    if (type === 'Figure' || type === 'Plot') {
      const r = v.el.getBoundingClientRect();
      const shown = typeof v.el.checkVisibility === 'function' ? v.el.checkVisibility({visibilityProperty: true, opacityProperty: true}) : true;
      if (r.width > 0 && r.height > 0 && shown) {
        const m = v.model, glyphs = [];
        for (const g of m.renderers) {
          if (g.type !== 'GlyphRenderer' || !g.visible) continue;
          const data = g.data_source.data ?? {};
          const fx = field(g.glyph, 'x'), fy = field(g.glyph, 'y');
          // the extent of the points drawn: both coordinates finite where a glyph has both as fields
          const both = (fx && fy) ? Array.from(data[fx] ?? []).map((x, i) => [x, (data[fy] ?? [])[i]])
            .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) : null;
          const xs = both ? both.map((p) => p[0]) : (fx ? finite(data[fx]) : []);
          const ys = both ? both.map((p) => p[1]) : (fy ? finite(data[fy]) : []);
          const n = g.data_source.get_length() ?? 0;
          const pointwise = (fx && xs.length === 0 && n > 0 && typeof (data[fx] ?? [])[0] === 'number');
          glyphs.push({glyph: g.glyph.type, n, points: (fx && fy) ? Math.min(drawable(data[fx]), drawable(data[fy])) : n,
                       all_nan: pointwise, x: extent(xs), y: extent(ys)});
        }
        out.push({title: m.title ? m.title.text : '', box: [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height],
                  x_range: range(m.x_range), y_range: range(m.y_range),
                  y_log: m.y_scale.type === 'LogScale', x_log: m.x_scale.type === 'LogScale', glyphs});
      }
    }
    for (const c of (typeof v.children === 'function' ? [...v.children()] : [])) walk(c);
  }
  for (const r of roots) walk(r);
  return out;
}"""


def coloured_pixels(png: bytes) -> int:
    """Pixels of a clear colour (glyphs in the palette, a colour map), not white, grey or black (axes, grid, text)."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((a.max(-1) - a.min(-1)) > 60).sum())


def audit(page, where: str, at_least: int = 1, shot: str | None = None) -> list[dict]:
    """Every figure on screen has drawn glyphs: points with finite data, axis ranges that cover that data, and
    coloured pixels in its box. Fails naming the figure and what is wrong; returns the figures."""
    page.wait_for_timeout(800)  # the last redraw
    figures = page.evaluate(FIGURES)
    deadline = time.monotonic() + 90  # figures drawn off the event loop land later on a busy machine
    while len(figures) < at_least and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        figures = page.evaluate(FIGURES)
    if shot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
    problems = []
    for f in figures:
        name = f"{where}: figure {f['title']!r}"
        if not any(g["points"] > 0 for g in f["glyphs"]):
            problems.append(f"{name} has no glyph with data ({f['glyphs']})")
            continue
        for axis in ("x", "y"):
            rng = f[f"{axis}_range"]
            if rng is None:
                continue
            lo, hi = sorted(rng)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                problems.append(f"{name}: {axis} range {rng} is not set")
                continue
            tol = 1e-6 * max(1.0, hi - lo)
            for g in f["glyphs"]:
                ext = g[axis]
                if ext is None or (f[f"{axis}_log"] and ext[0] <= 0):
                    continue
                if ext[0] < lo - tol or ext[1] > hi + tol:
                    problems.append(f"{name}: its {g['glyph']} spans {axis} {ext}, the axis shows only {rng}")
        x, y, w, h = f["box"]
        png = page.screenshot(clip={"x": x, "y": y, "width": w, "height": h}, full_page=True)
        if coloured_pixels(png) < 30:
            problems.append(f"{name} draws no coloured pixels (blank)")
    assert not problems, "\n".join(problems)
    assert len(figures) >= at_least, f"{where}: {len(figures)} figures on screen, expected at least {at_least}"
    return figures
