"""Load test of the dashboard: several browser sessions each start a small job on the shared queue, and every
session keeps turning a dial while the jobs train. A widget event's latency is the time from the dial's new value
in the browser to the page's URL showing it — a round trip through the server's event loop (the value goes to the
server, the server rewrites the session's URL, the browser applies it). Measured first on an idle server (the
baseline), then while the jobs run; at the end every job must be stored as done (none lost).

    python bench/bench_load.py [--sessions 5] [--events 40] [--epochs 60] [--json]
                               [--env NAME=VALUE ...] [--profile server.prof]

--env sets variables for the server (e.g. OMP_NUM_THREADS=1); --profile runs it under cProfile (the event loop's
thread: what blocks it) and writes the stats there for `python -m pstats`.

Needs Debian's chromium (`make browser`) and Playwright (the test extra).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Runs inside each page: set the dial's Bokeh model to each value in turn and wait for the URL to follow.
TURN_DIAL = """async ([dial, values, gap]) => {
  const model = [...Bokeh.documents[0].all_models].find(m => m.title === dial && 'value' in m);
  const out = [];
  for (const v of values) {
    const t0 = performance.now();
    model.value = v;
    while (!window.location.search.includes(dial + '=' + v)) {
      if (performance.now() - t0 > 10000) break;
      await new Promise(r => setTimeout(r, 2));
    }
    out.push(window.location.search.includes(dial + '=' + v) ? performance.now() - t0 : null);
    await new Promise(r => setTimeout(r, gap));
  }
  return out;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, env: dict, profile: str | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "panel", "serve", *sorted(str(p) for p in (REPO / "apps").glob("*.py")),
         "--address", "127.0.0.1", "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}",
         "--index", "index"],
        cwd=REPO, env={**os.environ, "WORKBENCH_DATA": str(data), **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/label_noise", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the dashboard server did not start")


def summary(ms: list) -> dict:
    got = np.array([m for m in ms if m is not None], dtype=float)
    return {"events": len(ms), "unanswered": sum(m is None for m in ms),
            "p50_ms": round(float(np.percentile(got, 50)), 1), "p95_ms": round(float(np.percentile(got, 95)), 1),
            "max_ms": round(float(got.max()), 1)}


async def load_test(url: str, sessions: int, events: int, job: dict, gap_ms: int = 100) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        pages = []
        for i in range(sessions):  # a context each: separate browsers as far as the server can tell
            page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
            query = "&".join(f"{k}={v}" for k, v in {**job, "seed": 100 + i}.items())
            await page.goto(f"{url}/label_noise?{query}")
            await page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            pages.append(page)

        async def turn(page, first):
            return await page.evaluate(TURN_DIAL, ["width", list(range(first, first + events)), gap_ms])

        idle = await asyncio.gather(*(turn(pg, 100 + 100 * i) for i, pg in enumerate(pages)))
        await asyncio.gather(*(pg.get_by_role("button", name="Run").click() for pg in pages))
        t0 = time.perf_counter()
        busy = await asyncio.gather(*(turn(pg, 150 + 100 * i) for i, pg in enumerate(pages)))
        measured_s = time.perf_counter() - t0
        finished = await asyncio.gather(*(pg.get_by_text("Done. Run").wait_for(timeout=600_000) for pg in pages),
                                        return_exceptions=True)
        jobs_s = time.perf_counter() - t0
        await browser.close()
    return {"idle": [m for s in idle for m in s], "busy": [m for s in busy for m in s], "measured_s": measured_s,
            "jobs_s": jobs_s, "pages_done": sum(f is None for f in finished)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--events", type=int, default=40, help="dial turns per session and phase")
    ap.add_argument("--epochs", type=int, default=60, help="epochs of each session's job (label noise, 1000 examples)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the server process")
    ap.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats to FILE")
    args = ap.parse_args(argv)
    import workbench as wb

    data = Path(tempfile.mkdtemp(prefix="wb-load-"))
    env = dict(pair.split("=", 1) for pair in args.env)
    proc, url = start_server(data, env, args.profile)
    try:
        job = {"epochs": args.epochs, "width": 64, "n_train": 1000}
        raw = asyncio.run(load_test(url, args.sessions, args.events, job))
    finally:
        proc.send_signal(signal.SIGINT)  # a clean stop: cProfile writes its stats
        proc.wait(30)
    rows = wb.Store(data).list()
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sessions": args.sessions,
           "job": job, "idle": summary(raw["idle"]), "while_jobs_run": summary(raw["busy"]),
           "measured_s": round(raw["measured_s"], 1), "all_jobs_s": round(raw["jobs_s"], 1),
           "jobs_done": sum(r["status"] == "done" for r in rows), "jobs_stored": len(rows),
           "pages_saw_done": raw["pages_done"]}
    out["p95_ratio_busy_vs_idle"] = round(out["while_jobs_run"]["p95_ms"] / out["idle"]["p95_ms"], 2)
    shutil.rmtree(data, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.sessions} sessions, {args.events} dial turns each per phase, jobs: label noise {job}")
        for phase in ("idle", "while_jobs_run"):
            s = out[phase]
            print(f"  {phase:15s} p50 {s['p50_ms']:7.1f} ms   p95 {s['p95_ms']:7.1f} ms   max {s['max_ms']:7.1f} ms"
                  f"   ({s['events']} events, {s['unanswered']} unanswered)")
        print(f"  p95 while jobs run / idle: {out['p95_ratio_busy_vs_idle']}×; turns took {out['measured_s']} s of "
              f"the jobs' {out['all_jobs_s']} s; jobs done {out['jobs_done']}/{args.sessions}, "
              f"pages that showed Done {out['pages_saw_done']}/{args.sessions}")
    return out


if __name__ == "__main__":
    main()
