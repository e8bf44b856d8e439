"""Jobs on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1 (started and stopped
by these tests, by PID). Runs, sweeps and the dashboard's job queue go through them; records come back while a task
trains; cancel stops a task at its next step; a worker killed mid-task costs nothing finished; a lost scheduler is a
failed job with its reason, and the queue goes on. Only this process writes the store."""
import os
import signal
import sys
import threading
import time

import pytest
import xarray as xr

import workbench as wb
from workbench.engine.events import ArrayKept, PartStored, Recorded
from workbench.runs.cluster import LocalProcesses
from workbench.runs.jobs import JobQueue

from .conftest import FAST

LONG = dict(epochs=100000, eval_every=20, width=16, n_train=200)  # trains until cancelled
POINTS = """() => { let n = 0; for (const m of Bokeh.documents[0].all_models)
                      if (m.type === 'ColumnDataSource') n = Math.max(n, m.get_length() || 0); return n; }"""


@pytest.fixture(scope="module")
def cluster():
    with LocalProcesses(workers=2, gpus=0) as c:
        yield c


def _workers(address: str) -> tuple[dict, dict]:
    """Each worker's PID, and the task keys each is processing."""
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:
        return client.run(os.getpid), {w: ks for w, ks in client.processing().items()}


def _wait(predicate, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_run_on_the_cluster_streams_its_records_and_equals_the_local_run(cluster, store, tmp_path):
    local = wb.run("label_noise", store=store, progress=False, **FAST)
    seen = []
    remote_store = wb.Store(tmp_path / "remote")
    remote = wb.run("label_noise", store=remote_store, progress=False, scheduler=cluster.address,
                    sinks=[lambda r: seen.append((time.monotonic(), r))], **FAST)
    assert remote.status == "done" and remote.id == local.id  # the same config and code: the same id
    assert [r["epoch"] for _, r in seen] == list(local.ds["epoch"].values)  # every record once, in order
    xr.testing.assert_allclose(local.ds.drop_attrs(), remote.ds.drop_attrs(), rtol=1e-5, atol=1e-6)
    assert remote_store.get(remote.id)["status"] == "done"  # stored here: the worker returned it


def test_records_arrive_while_the_task_trains_and_cancel_stops_it_at_its_next_step(cluster, store):
    cancel, seen = threading.Event(), []
    out = {}
    thread = threading.Thread(target=lambda: out.update(run=wb.run(
        "label_noise", store=store, progress=False, scheduler=cluster.address, cancel=cancel,
        sinks=[seen.append], **LONG)))
    thread.start()
    _wait(lambda: len(seen) >= 5, what="live records from the worker")
    assert thread.is_alive()  # they came while it trained, not with the result
    cancel.set()
    thread.join(120)
    assert not thread.is_alive(), "the cancelled task did not stop"
    run = out["run"]
    assert run.status == "cancelled" and run.step > 0
    assert store.get(run.id)["status"] == "cancelled"  # what it computed is kept
    assert len(run.ds["epoch"]) >= len(seen)  # the stored records hold every streamed one


def test_a_sweep_through_the_cluster_equals_the_local_one(cluster, store, tmp_path):
    grid, fixed = {"flip_rate": [0.0, 0.4], "width": [16, 32]}, dict(epochs=3, n_train=300)
    local = wb.sweep("label_noise", grid=grid, seeds=[0, 1], store=store, progress=False, **fixed)
    events = []
    remote = wb.sweep("label_noise", grid=grid, seeds=[0, 1], store=wb.Store(tmp_path / "remote"),
                      scheduler=cluster.address, progress=False, sinks=[events.append], **fixed)
    assert remote.status == "done"
    parts = {e.task for e in events if isinstance(e, PartStored)}
    streamed = {e.task for e in events if isinstance(e, Recorded)}
    assert streamed == parts and len(parts) >= 2  # every task's records came back while it trained
    for task in parts:  # each before its part was stored, each step once
        steps = [e.record["step"] for e in events if isinstance(e, Recorded) and e.task == task]
        assert steps == sorted(set(steps))
        assert events.index(next(e for e in events if isinstance(e, Recorded) and e.task == task)) < \
            events.index(next(e for e in events if isinstance(e, PartStored) and e.task == task))
    xr.testing.assert_allclose(local.ds.drop_attrs(), remote.ds.drop_attrs(), rtol=1e-5, atol=1e-6)


def test_a_cancelled_sweep_on_the_cluster_stops_its_tasks_and_keeps_what_finished(cluster, store):
    cancel, events = threading.Event(), []

    def sink(e):
        events.append(e)
        if isinstance(e, Recorded) and e.record["step"] > 40:
            cancel.set()  # part way through
    out = wb.sweep("label_noise", grid={"width": [16, 24, 32]}, seeds=[0], store=store, scheduler=cluster.address,
                   progress=False, cancel=cancel, sinks=[sink], epochs=100000, eval_every=20, n_train=200)
    assert out.status == "cancelled"
    _wait(lambda: not any(_workers(cluster.address)[1].values()), timeout=60, what="the tasks to stop")


def test_a_sweep_keeps_its_finished_parts_and_completes_when_a_worker_dies(cluster, store, tmp_path):
    killed, events = [], []

    def killer():  # once the first part is stored, the worker still training another task dies
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(isinstance(e, PartStored) for e in events):
            time.sleep(0.05)
        pids, busy = _workers(cluster.address)
        running = [w for w, keys in busy.items() if keys]
        if running:
            os.kill(pids[running[0]], signal.SIGKILL)
            killed.append(running[0])
    grid, fixed = {"width": [16, 24, 32, 40]}, dict(epochs=300, eval_every=20, n_train=300)
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        out = wb.sweep("label_noise", grid=grid, seeds=[0], store=store, scheduler=cluster.address,
                       progress=False, sinks=[events.append], **fixed)
        thread.join(60)
        assert killed, "no worker was training when the first part was stored"
        assert out.status == "done"
        fresh = wb.sweep("label_noise", grid=grid, seeds=[0], store=wb.Store(tmp_path / "fresh"), progress=False,
                         **fixed)
        xr.testing.assert_allclose(out.ds.drop_attrs(), fresh.ds.drop_attrs(), rtol=1e-5, atol=1e-6)
    finally:
        thread.join(60)
        if killed:
            cluster.add_worker()  # back to two workers for the tests after this one
            cluster.wait_for_workers(2)


def test_a_dashboard_job_survives_its_worker_being_killed(cluster, store, tmp_path):
    queue = JobQueue(scheduler=cluster.address)
    assert queue.where()["backend"] == "dask" and queue.where()["workers"] == 2
    dials = dict(FAST, epochs=400, eval_every=10)
    job = queue.submit_run("label_noise", dials, store=store)
    _wait(lambda: sum(isinstance(e, Recorded) for e in job.events) >= 3, what="the job's first records")
    pids, busy = _workers(cluster.address)
    running = [w for w, keys in busy.items() if keys]
    assert len(running) == 1
    os.kill(pids[running[0]], signal.SIGKILL)  # the worker training it dies mid-task
    assert job.ended.wait(300), "the job did not end after its worker died"
    assert job.status == "done", job.error
    steps = [e.record["epoch"] for e in job.events if isinstance(e, Recorded)]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # the retry's repeats were not shown twice
    assert any(isinstance(e, ArrayKept) for e in job.events)  # the kept arrays came with the result
    fresh = wb.run("label_noise", store=wb.Store(tmp_path / "fresh"), progress=False, **dials)
    xr.testing.assert_allclose(job.result.ds.drop_attrs(), fresh.ds.drop_attrs(), rtol=1e-5, atol=1e-6)
    cluster.add_worker()  # the cluster back to two workers for the tests after this one
    cluster.wait_for_workers(2)


def test_a_lost_scheduler_fails_the_job_with_its_reason_and_the_queue_goes_on(store, monkeypatch):
    import workbench.runs.remote as remote

    monkeypatch.setattr(remote, "LOST_S", 3.0)
    monkeypatch.setattr(remote, "CONNECT_S", 3)  # the job after the loss: refused sooner
    with LocalProcesses(workers=1, gpus=0) as doomed:
        queue = JobQueue(scheduler=doomed.address)
        job = queue.submit_run("label_noise", LONG, store=store)
        _wait(lambda: job.status == "running" and job.events, what="the job to run on the doomed cluster")
        doomed.scheduler.send_signal(signal.SIGKILL)
        assert job.ended.wait(180), "the job did not end when its scheduler was lost"
    assert job.status == "failed" and "lost the Dask scheduler" in job.error
    assert store.get(job.run_id)["status"] == "failed"  # said in the store too, with the reason
    again = queue.submit_run("label_noise", FAST, store=store)  # the queue still answers: a clear failure
    assert again.ended.wait(180) and again.status == "failed" and doomed.address in (again.error or "")


def test_the_dashboard_started_against_the_scheduler_runs_its_job_there_with_live_curves(cluster, tmp_path):
    from playwright.sync_api import sync_playwright

    from .served import CHROMIUM, SCREENSHOTS, audit, dashboard

    data = tmp_path / "served"
    with dashboard(data, DASK_SCHEDULER_ADDRESS=cluster.address) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/label_noise?epochs=100000&eval_every=20&width=16&n_train=200")
        page.get_by_role("button", name="Run").click(timeout=120_000)
        page.get_by_text("Running: epoch").wait_for(timeout=120_000)
        page.wait_for_function(POINTS.replace("return n;", "return n >= 5;"), timeout=120_000)
        first = page.evaluate(POINTS)
        page.wait_for_function(POINTS.replace("return n;", f"return n > {first};"), timeout=120_000)  # live
        _, busy = _workers(cluster.address)
        assert any(keys for keys in busy.values()), "the job is not a task on the cluster"
        page.locator(".bk-tab", has_text="Jobs").click()
        summary = page.locator(".wb-queue-summary")
        said = summary.get_by_text("on the Dask cluster")
        said.wait_for(timeout=60_000)
        assert cluster.address in said.text_content() and "(2 workers" in said.text_content()
        page.screenshot(path=str(SCREENSHOTS / "dask-jobs.png"), full_page=True)
        page.locator(".wb-queue .tabulator-row", has_text="running").locator(".wb-cancel").click()  # its row
        page.locator(".wb-status").get_by_text("Cancelled").wait_for(timeout=120_000)  # the task stopped
        page.locator(".bk-tab", has_text="Run").first.click()
        # the curves as the stopped run left them (a growing curve's axes trail its data by a redraw)
        curves = audit(page, "a job on the Dask cluster", at_least=1, shot="dask-job")
        assert any(f["title"] == "Accuracy" for f in curves)
        browser.close()
    rows = wb.Store(data).list()
    assert [r["status"] for r in rows] == ["cancelled"] and rows[0]["step"] > 0  # stored by the server, kept


def test_workbench_cluster_serves_runs_from_the_command_line_and_stops_its_processes_on_ctrl_c(tmp_path):
    import subprocess

    from workbench.runs.cluster import _free_port

    port = _free_port()
    env = {**os.environ, "WORKBENCH_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "cluster", "--workers", "1", "--port", str(port),
                             "--dashboard-port", str(_free_port())], env=env, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()
        assert f"Dask scheduler at tcp://127.0.0.1:{port} (1 CPU worker)" in first, first
        out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "label_noise", "--epochs", "3",
                              "--width", "16", "--n-train", "200", "--scheduler", f"tcp://127.0.0.1:{port}", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert '"status": "done"' in out.stdout
        assert wb.Store(tmp_path / "data").list()[0]["status"] == "done"  # stored by the command, not the worker
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    import socket

    with pytest.raises(OSError):  # the scheduler is gone with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_dask_starts_a_cluster_for_the_servers_jobs(monkeypatch, store):
    import workbench.runs.jobs as jobs

    monkeypatch.setenv("WORKBENCH_DASK", "local")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setattr(jobs, "_shared", None)
    switch = sys.getswitchinterval()
    queue = jobs.shared()
    sys.setswitchinterval(switch)  # shared() shortens it for a server's process: not for this test process
    try:
        assert queue.where()["backend"] == "dask" and queue.where()["workers"] == 2
        job = queue.submit_run("label_noise", FAST, store=store)
        assert job.ended.wait(180) and job.status == "done", job.error
        assert any(isinstance(e, Recorded) for e in job.events)
    finally:
        queue.cluster.stop()


def test_a_gpu_run_on_a_cluster_without_gpu_workers_is_refused_not_left_waiting(cluster, store):
    with pytest.raises(wb.ConfigError, match="none has the resource GPU=1"):
        wb.run("label_noise", store=store, progress=False, scheduler=cluster.address, device="cuda", **FAST)
    with pytest.raises(wb.ConfigError, match="device"):
        wb.run("label_noise", store=store, progress=False, scheduler=cluster.address, device="tpu", **FAST)
    assert store.list() == []  # nothing stored
