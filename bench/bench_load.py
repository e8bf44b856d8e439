"""Load test of the dashboard: several browser sessions each start a small job on the shared queue, and every
session keeps turning a dial while the jobs train. A widget event's latency is the time from the dial's new value
in the browser to the page's URL showing it — a round trip through the server's event loop (the value goes to the
server, the server rewrites the session's URL, the browser applies it). Measured first on an idle server (the
baseline), then while the jobs run; at the end every job must be stored as done (none lost).

    python bench/bench_load.py [--sessions 5] [--events 40] [--epochs 60] [--json]
                               [--env NAME=VALUE ...] [--profile server.prof]
    python bench/bench_load.py --abuse [--sessions 3] [--hostile 2] [--events 40] [--json]

--abuse: the same server shared (WORKBENCH_SHARED=1, sign-in by password, small quotas, one job worker) and, beside
the normal visitors, --hostile hostile ones (two, or one): each opens three tabs and queues a 100,000-epoch job in
every one; the first asks for a 17 GB model and tries to cancel the normal visitors' jobs from its Jobs tab, the
last asks for a 10,000-cell sweep. The quotas
must hold (the third tab, the model and the sweep refused, with the reason on the page), the cancel must be
refused, the normal visitors' small jobs must end done (the time limit per job stops the hogs, the round-robin
puts the others first), and every dial turn of theirs must be answered meanwhile.

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
import re
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
TURN_DIAL = """async ([dial, values, gap, patience]) => {
  const model = [...Bokeh.documents[0].all_models].find(m => m.title === dial && 'value' in m);
  const out = [];
  for (const v of values) {
    const t0 = performance.now();
    model.value = v;
    while (!window.location.search.includes(dial + '=' + v)) {
      if (performance.now() - t0 > patience) break;
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


def _interruptible() -> None:
    """In the server's process before it starts: Ctrl-C (SIGINT) stops it, even when this process ignores SIGINT
    (as a background job of a non-interactive shell does, and every child inherits): stop_server relies on it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(data: Path, env: dict, profile: str | None = None, extra: tuple = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "panel", "serve",
         *sorted(str(p) for p in (REPO / "apps").glob("*.py")),
         "--address", "127.0.0.1", "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}",
         "--index", "index", *extra],
        cwd=REPO, env={**os.environ, "WORKBENCH_DATA": str(data), **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=_interruptible)
    url = f"http://127.0.0.1:{port}"
    # a generous wait per request: a probe given up on after 2 s still costs the server its page build, and on a
    # busy machine such abandoned builds piled up in front of the sessions' own work
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/login" if extra else url + "/label_noise", timeout=60)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the dashboard server did not start")


def stop_server(proc) -> None:
    """A clean stop (SIGINT: cProfile writes its stats, jobs are cancelled); on a busy machine that can take a while,
    and a server that has not stopped after two minutes is killed rather than failing the measurement."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# how a page says its job ended (viz/page.py's status line): done, or stopped short in one of three ways
ENDED = re.compile(r"^(Done|Cancelled|Diverged at step \d+|Failed)\b")


async def page_end(page, timeout_ms: float = 600_000) -> str | None:
    """The status line once the page's job has ended, whichever way it ended (None: no end seen in time). Waiting
    for "Done" alone would sit out the whole timeout when a job was stopped instead."""
    status = page.get_by_text(ENDED).first
    try:
        await status.wait_for(timeout=timeout_ms)
        return (await status.inner_text()).strip()
    except Exception:  # noqa: BLE001 - a Playwright timeout: no end seen
        return None


def saw_done(ends: list) -> int:
    return sum(bool(e) and e.startswith("Done.") for e in ends)


def _rounded(marks: dict) -> dict:
    return {k: round(v, 1) for k, v in marks.items()}


def summary(ms: list) -> dict:
    got = np.array([m for m in ms if m is not None], dtype=float)
    return {"events": len(ms), "unanswered": sum(m is None for m in ms),
            "p50_ms": round(float(np.percentile(got, 50)), 1), "p95_ms": round(float(np.percentile(got, 95)), 1),
            "max_ms": round(float(got.max()), 1)}


#: how long a dial turn may wait for the server's answer before it counts as unanswered (--patience)
PATIENCE_S = 10.0


async def load_test(url: str, sessions: int, events: int, job: dict, gap_ms: int = 100,
                    patience_s: float = PATIENCE_S) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        marks, start = {}, time.perf_counter()
        pages = []
        for i in range(sessions):  # a context each: separate browsers as far as the server can tell
            page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
            query = "&".join(f"{k}={v}" for k, v in {**job, "seed": 100 + i}.items())
            await page.goto(f"{url}/label_noise?{query}")
            await page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            pages.append(page)

        async def turn(page, first):
            return await page.evaluate(TURN_DIAL, ["width", list(range(first, first + events)), gap_ms,
                                                   1000 * patience_s])

        marks["pages_open"] = time.perf_counter() - start
        idle = await asyncio.gather(*(turn(pg, 100 + 100 * i) for i, pg in enumerate(pages)))
        marks["idle_turns"] = time.perf_counter() - start
        await asyncio.gather(*(pg.get_by_role("button", name="Run").click() for pg in pages))
        t0 = time.perf_counter()
        busy = await asyncio.gather(*(turn(pg, 150 + 100 * i) for i, pg in enumerate(pages)))
        measured_s = time.perf_counter() - t0
        marks["busy_turns"] = time.perf_counter() - start
        ends = await asyncio.gather(*(page_end(pg) for pg in pages))
        jobs_s = time.perf_counter() - t0
        marks["jobs_ended"] = time.perf_counter() - start
        await browser.close()
    return {"idle": [m for s in idle for m in s], "busy": [m for s in busy for m in s], "measured_s": measured_s,
            "jobs_s": jobs_s, "ends": ends, "marks": marks}


# the shared server of --abuse: sign-in by one password (any user name), small quotas, one job worker
ABUSE_ENV = {"WORKBENCH_SHARED": "1", "WORKBENCH_QUOTA_SESSION": "2", "WORKBENCH_QUOTA_JOBS": "12",
             "WORKBENCH_QUOTA_CELLS": "200", "WORKBENCH_QUOTA_MEMORY": "0.05", "WORKBENCH_QUOTA_JOB_S": "15",
             "WORKBENCH_JOB_WORKERS": "1"}
PASSWORD = "load-test-password"
HOG = {"epochs": 100000, "width": 64, "n_train": 1000}


async def _signed_in(browser, url: str, user: str, path: str):
    """A page of a new browser context (its own cookies) signed in as `user`, opened at `path`."""
    page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
    await page.goto(f"{url}/login")
    await page.locator("input[name=username]").fill(user)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("input[name=password]").press("Enter")
    await page.wait_for_url(lambda u: "/login" not in u, timeout=60_000)
    await page.goto(f"{url}{path}")
    await page.get_by_role("button", name="Run").wait_for(timeout=60_000)
    return page


async def _fill(page, label: str, value) -> None:
    field = page.locator(".bk-input-group", has_text=label).locator("input").first
    await field.fill(str(value))
    await field.press("Enter")


async def _said(page, text: str, timeout: float = 60_000) -> bool:
    try:
        await page.get_by_text(text).first.wait_for(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - a Playwright timeout: not said
        return False


async def abuse_test(url: str, sessions: int, events: int, job: dict, gap_ms: int = 100, hostile: int = 2,
                     patience_s: float = PATIENCE_S) -> dict:
    from playwright.async_api import async_playwright

    hog = "&".join(f"{k}={v}" for k, v in HOG.items())
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        marks, start = {}, time.perf_counter()
        normal = []
        for i in range(sessions):
            query = "&".join(f"{k}={v}" for k, v in {**job, "seed": 100 + i}.items())
            normal.append(await _signed_in(browser, url, f"user{i}", f"/label_noise?{query}"))
        # the hostile visitors: three tabs each (one browser, so one sign-in), a hog queued in every tab
        tabs = {}
        names = ("mallory", "trudy")[:hostile]
        for name in names:
            first = await _signed_in(browser, url, name, f"/label_noise?{hog}&seed=1")
            context = first.context
            more = []
            for k in (2, 3):
                tab = await context.new_page()
                await tab.goto(f"{url}/label_noise?{hog}&seed={k}")
                await tab.get_by_role("button", name="Run").wait_for(timeout=60_000)
                more.append(tab)
            tabs[name] = [first, *more]
        marks["pages_open"] = time.perf_counter() - start
        refused = {"tabs": 0, "model": 0, "sweep": 0, "cancel": 0}  # (with one hostile visitor its third tab asks
        # for the model, then for the sweep on a plain page)
        for name, pages in tabs.items():
            for tab in pages:
                await tab.get_by_role("button", name="Run").click()
                await tab.wait_for_timeout(300)
            if await _said(pages[2], "per visitor on this server"):  # the third tab: over the visitor's quota
                refused["tabs"] += 1
        def turns(first):  # every normal visitor turns its width dial `events` times, from its own values
            return asyncio.gather(*(pg.evaluate(TURN_DIAL, ["width", list(range(first + 100 * i, first + 100 * i
                                                                                 + events)), gap_ms,
                                                            1000 * patience_s])
                                    for i, pg in enumerate(normal)))
        marks["hogs_queued"] = time.perf_counter() - start
        idle_turns = await turns(100)
        marks["idle_turns"] = time.perf_counter() - start
        await asyncio.gather(*(pg.get_by_role("button", name="Run").click() for pg in normal))
        t0 = time.perf_counter()
        busy_turns = turns(150)
        # meanwhile the hostile visitors ask for more than the server allows, and try to cancel the others' jobs
        tab = tabs[names[0]][2]
        await tab.goto(f"{url}/label_noise?width=8192&depth=16&epochs=3")
        await tab.get_by_role("button", name="Run").click()
        refused["model"] += await _said(tab, "of the memory available")
        tab = tabs[names[-1]][2]
        if hostile == 1:
            await tab.goto(f"{url}/label_noise")
            await tab.get_by_role("button", name="Run").wait_for(timeout=60_000)
        await tab.locator(".bk-tab", has_text="Sweep").click()
        await _fill(tab, "x values", ",".join(f"{v / 100:g}" for v in range(100)))
        await _fill(tab, "y values", ",".join(str(v) for v in range(8, 808, 8)))
        await tab.get_by_role("button", name="Sweep").click()
        refused["sweep"] += await _said(tab, "cells per sweep on this server")
        tab = tabs[names[0]][0]
        await tab.locator(".bk-tab", has_text="Jobs").click()
        rows = tab.locator(".wb-queue .tabulator-row", has_text="another session").or_(
            tab.locator(".wb-queue .tabulator-row", has_text="user0"))
        await rows.first.wait_for(timeout=60_000)
        for _ in range(20):  # the table redraws as jobs progress: click again if it was redrawn under the pointer
            try:
                await rows.first.locator(".wb-cancel").click(timeout=2_000, force=True)
            except Exception:  # noqa: BLE001 - a Playwright timeout: the row was redrawn
                continue
            if await _said(tab, "only its owner may cancel it", timeout=5_000):
                refused["cancel"] += 1
                break
        marks["abuses_tried"] = time.perf_counter() - start
        busy = await busy_turns
        marks["busy_turns"] = time.perf_counter() - start
        ends = await asyncio.gather(*(page_end(pg) for pg in normal))
        jobs_s = time.perf_counter() - t0
        marks["jobs_ended"] = time.perf_counter() - start
        hogs_stopped = await _said(tabs[names[0]][0], "limit per job", timeout=120_000)
        marks["hog_seen_stopped"] = time.perf_counter() - start
        await browser.close()
    return {"idle": [m for s in idle_turns for m in s], "busy": [m for s in busy for m in s], "jobs_s": jobs_s,
            "ends": ends, "marks": marks, "refused": refused, "hog_stopped_at_limit": hogs_stopped}


def abuse_main(args) -> dict:
    import workbench as wb

    data = Path(tempfile.mkdtemp(prefix="wb-abuse-"))
    env = {**ABUSE_ENV, **dict(pair.split("=", 1) for pair in args.env)}
    proc, url = start_server(data, env, args.profile, extra=("--basic-auth", PASSWORD, "--cookie-secret",
                                                             "bench-load-cookie-secret"))
    try:
        job = {"epochs": args.epochs, "width": 32, "n_train": 300}
        raw = asyncio.run(abuse_test(url, args.sessions, args.events, job, hostile=args.hostile,
                                     patience_s=args.patience))
    finally:
        stop_server(proc)
    rows = wb.Store(data).list()
    normal = [r for r in rows if r["owner"].startswith("user:user")]
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sessions": args.sessions,
           "hostile": args.hostile, "job": job, "quotas": env, "idle": summary(raw["idle"]),
           "while_abused": summary(raw["busy"]),
           "refused": raw["refused"], "normal_jobs_done": sum(r["status"] == "done" for r in normal),
           "pages_saw_done": saw_done(raw["ends"]), "page_ends": raw["ends"], "phases_s": _rounded(raw["marks"]),
           "normal_jobs_s": round(raw["jobs_s"], 1),
           "hog_stopped_at_limit": raw["hog_stopped_at_limit"],
           "runs": [{"owner": r["owner"], "status": r["status"], "created": r["created"], "finished": r["finished"],
                     "wall_s": r["wall_s"]} for r in sorted(rows, key=lambda r: r["created"] or "")]}
    shutil.rmtree(data, ignore_errors=True)
    show(out, args.json, f"abuse: {args.sessions} normal visitors ({job}) and {args.hostile} hostile, quotas "
                         f"{env}",
         ("idle", "while_abused"),
         f"refused: {out['refused']}; normal jobs done {out['normal_jobs_done']}/{args.sessions} in "
         f"{out['normal_jobs_s']} s; a hog stopped at the time limit: {out['hog_stopped_at_limit']}")
    return out


def show(out: dict, as_json: bool, title: str, phases: tuple, last: str) -> None:
    """Print a run's numbers: one JSON line, or a title, a line per phase and a summary line."""
    if as_json:
        print(json.dumps(out))
        return
    print(title)
    for phase in phases:
        s = out[phase]
        print(f"  {phase:15s} p50 {s['p50_ms']:7.1f} ms   p95 {s['p95_ms']:7.1f} ms   max {s['max_ms']:7.1f} ms"
              f"   ({s['events']} events, {s['unanswered']} unanswered)")
    print(f"  {last}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--events", type=int, default=40, help="dial turns per session and phase")
    ap.add_argument("--epochs", type=int, default=60, help="epochs of each session's job (label noise, 1000 examples)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the server process")
    ap.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats to FILE")
    ap.add_argument("--abuse", action="store_true", help="a shared server with hostile visitors (see above)")
    ap.add_argument("--hostile", type=int, default=2, choices=(1, 2), help="hostile visitors under --abuse")
    ap.add_argument("--patience", type=float, default=PATIENCE_S,
                    help="seconds a dial turn waits for the server's answer before it counts as unanswered")
    args = ap.parse_args(argv)
    if args.abuse:
        return abuse_main(args)
    import workbench as wb

    data = Path(tempfile.mkdtemp(prefix="wb-load-"))
    env = dict(pair.split("=", 1) for pair in args.env)
    proc, url = start_server(data, env, args.profile)
    try:
        job = {"epochs": args.epochs, "width": 64, "n_train": 1000}
        raw = asyncio.run(load_test(url, args.sessions, args.events, job, patience_s=args.patience))
    finally:
        stop_server(proc)
    rows = wb.Store(data).list()
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sessions": args.sessions,
           "job": job, "idle": summary(raw["idle"]), "while_jobs_run": summary(raw["busy"]),
           "measured_s": round(raw["measured_s"], 1), "all_jobs_s": round(raw["jobs_s"], 1),
           "jobs_done": sum(r["status"] == "done" for r in rows), "jobs_stored": len(rows),
           "pages_saw_done": saw_done(raw["ends"]), "page_ends": raw["ends"], "phases_s": _rounded(raw["marks"])}
    out["p95_ratio_busy_vs_idle"] = round(out["while_jobs_run"]["p95_ms"] / out["idle"]["p95_ms"], 2)
    shutil.rmtree(data, ignore_errors=True)
    show(out, args.json, f"{args.sessions} sessions, {args.events} dial turns each per phase, jobs: label noise {job}",
         ("idle", "while_jobs_run"),
         f"p95 while jobs run / idle: {out['p95_ratio_busy_vs_idle']}×; turns took {out['measured_s']} s of the jobs' "
         f"{out['all_jobs_s']} s; jobs done {out['jobs_done']}/{args.sessions}, pages that showed Done "
         f"{out['pages_saw_done']}/{args.sessions}")
    return out


if __name__ == "__main__":
    main()
