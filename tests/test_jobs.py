"""The server's job queue: statuses, progress, cancel, order, sweeps, and two sessions seeing the same jobs."""
import threading
import time

import pytest

import workbench as wb
from workbench.engine.events import PartStored, Recorded, TaskStarted
from workbench.runs.jobs import JobQueue, default_workers

from .conftest import FAST


def test_a_run_job_streams_its_records_and_ends_done_with_the_stored_run(store):
    q = JobQueue(workers=1)
    job = q.submit_run("label_noise", dict(FAST), store=store)
    assert job.status in ("queued", "running") and job.total == FAST["epochs"]
    assert q.wait(job, 120)
    assert job.status == "done" and job.row()["progress"] == 100 and job.error is None
    assert [e.record["epoch"] for e in job.events if isinstance(e, Recorded)] == [0, 1, 2, 3]
    assert store.get(job.run_id)["status"] == "done" and job.result.ds.sizes["epoch"] == 4
    assert q.counts()["done"] == 1 and job.label == ", ".join(f"{k}={v}" for k, v in FAST.items())


def test_bad_dials_are_refused_before_anything_is_queued(store):
    q = JobQueue(workers=1)
    with pytest.raises(wb.ConfigError, match="width=0 is not allowed"):
        q.submit_run("label_noise", dict(width=0), store=store)
    with pytest.raises(wb.ConfigError, match="grid"):
        q.submit_sweep("label_noise", {"nonsense": [1, 2]}, [0], {}, store=store)
    assert q.jobs() == [] and store.list() == []
    with pytest.raises(wb.ConfigError, match="job='nope'"):
        q.cancel("nope")


def test_jobs_run_in_order_and_cancel_stops_a_queued_or_running_one(store):
    q = JobQueue(workers=1)
    gate = threading.Event()
    first = q.submit_run("label_noise", dict(FAST, epochs=200, width=64), store=store)
    # the first job's own records hold the worker until the test has queued the rest
    first.events = _Gated(first.events, gate)
    second = q.submit_run("label_noise", dict(FAST, seed=1), store=store)
    third = q.submit_run("label_noise", dict(FAST, seed=2), store=store)
    assert [j.id for j in q.jobs()] == [third.id, second.id, first.id]  # newest first
    assert second.status == "queued" and q.cancel(second.id) and second.status == "cancelled"
    for _ in range(600):  # the worker has taken the first job (on a slow machine it may not have yet)
        if first.status == "running":
            break
        time.sleep(0.1)
    assert first.status == "running"
    assert q.cancel(first.id)
    gate.set()
    assert q.wait(third, 120) and q.wait(first, 120)
    assert first.status == "cancelled" and store.get(first.run_id)["status"] == "cancelled"
    assert first.done < 200  # stopped part-way
    assert second.result is None and second.started is None  # never ran
    assert third.status == "done" and not q.cancel(third.id)  # an ended job is not cancelled again
    assert sorted(r["status"] for r in store.list()) == ["cancelled", "done"]


class _Gated(list):
    """An event list whose first append waits for a gate (holds the worker mid-run)."""

    def __init__(self, items, gate):
        super().__init__(items)
        self.gate = gate

    def append(self, item):
        self.gate.wait(60)
        super().append(item)


def test_a_diverged_run_and_a_job_that_cannot_start_are_results(store, tmp_path):
    q = JobQueue(workers=1)
    bad = q.submit_run("label_noise", dict(dataset="blobs", optimizer="sgd", lr=10.0, momentum=0.99, depth=4,
                                           epochs=20, n_train=300), store=store)
    assert q.wait(bad, 120) and bad.status == "diverged" and "not finite" in bad.error
    assert bad.row()["progress"] < 100

    class Broken(wb.Store):
        def get(self, run_id):
            raise OSError("disk gone")

    broken = q.submit_run("label_noise", dict(FAST), store=Broken(tmp_path / "b"))
    assert q.wait(broken, 60) and broken.status == "failed" and "disk gone" in broken.error
    assert broken.result is None
    again = q.submit_run("label_noise", dict(FAST), store=store)  # the worker survived
    assert q.wait(again, 120) and again.status == "done"


def test_a_sweep_job_counts_stored_cells(store):
    q = JobQueue(workers=1)
    job = q.submit_sweep("label_noise", {"flip_rate": [0.0, 0.4]}, [0, 1], dict(FAST), store=store)
    assert job.total == 4 and job.kind == "sweep" and job.label == "flip_rate (2), 2 seeds"
    assert q.wait(job, 180) and job.status == "done" and job.done == 4
    assert {type(e) for e in job.events} == {TaskStarted, Recorded, PartStored}
    assert store.get(job.run_id)["kind"] == "sweep"


def test_old_finished_jobs_are_forgotten_but_their_runs_stay(store):
    q = JobQueue(workers=1, keep=2)
    jobs = [q.submit_run("label_noise", dict(FAST, seed=s, epochs=1), store=store) for s in range(4)]
    for j in jobs:
        assert q.wait(j, 120)
    q.submit_run("label_noise", dict(FAST, seed=0, epochs=1), store=store)  # forgetting happens on submit
    assert jobs[0] not in q.jobs() and jobs[1] not in q.jobs() and jobs[3] in q.jobs()
    assert len(store.list()) == 4


def test_the_worker_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_JOB_WORKERS", "3")
    assert default_workers() == 3 and JobQueue().workers == 3
    monkeypatch.setenv("WORKBENCH_JOB_WORKERS", "many")
    with pytest.raises(wb.ConfigError, match="WORKBENCH_JOB_WORKERS='many'"):
        default_workers()
    monkeypatch.delenv("WORKBENCH_JOB_WORKERS")
    assert 1 <= default_workers() <= 4


def test_two_sessions_see_the_same_queue_and_follow_the_same_job(store):
    from workbench.viz.page import StudyPage

    q = JobQueue(workers=1)
    a, b = StudyPage("label_noise", store=store, jobs=q), StudyPage("label_noise", store=store, jobs=q)
    a.panel(), b.panel()
    for k, v in FAST.items():
        a.dials[k].value = v
    a._on_run()
    assert q.wait(a.job, 120)
    job = a.job
    b.queue.refresh(force=True)
    assert list(b.queue.table.value["job"]) == [job.id] and b.queue.table.value["status"][0] == "done"
    assert "1 done" in b.queue.summary.object
    b.queue._on_click(type("Click", (), {"column": "open", "row": 0})())  # session b opens a's job
    b.tick()
    a.tick()
    assert len(b.buffer.data) == len(a.buffer.data) == 4 and b.last_run.id == a.last_run.id
    other = StudyPage("grokking", store=store, jobs=q)
    other.queue._on_click(type("Click", (), {"column": "open", "row": 0})())  # not its study: a link instead
    assert "](./label_noise)" in other.queue.summary.object and other.job is None


def test_the_shared_queue_is_one_per_process_and_hands_the_gil_over_quickly():
    import sys

    from workbench.runs import jobs

    assert jobs.shared() is jobs.shared()
    assert sys.getswitchinterval() == pytest.approx(jobs.SWITCH_S)


def test_quotas_refuse_what_a_shared_server_cannot_take_and_say_why(store):
    from workbench.runs.jobs import JobQueue, Quotas

    q = JobQueue(quotas=Quotas(per_session=1, total=2, sweep_cells=10, memory_share=0.01))
    long = dict(epochs=100000, width=16, n_train=200)
    first = q.submit_run("label_noise", long, store=store, owner="a")
    with pytest.raises(wb.ConfigError, match="at most 1 per visitor"):
        q.submit_run("label_noise", long, store=store, owner="a")
    with pytest.raises(wb.ConfigError, match=r"memory=.*GiB for one model.*of the memory available"):
        q.submit_run("label_noise", dict(epochs=3, width=4096, depth=4), store=store, owner="b")
    with pytest.raises(wb.ConfigError, match="at most 10 cells per sweep"):
        q.submit_sweep("label_noise", {"width": list(range(8, 200, 8))}, 5, {}, store=store, owner="b")
    second = q.submit_run("label_noise", long, store=store, owner="b")
    with pytest.raises(wb.ConfigError, match="at most 2 on this server"):
        q.submit_run("label_noise", long, store=store, owner="c")
    for job in (first, second):
        q.cancel(job.id)
        assert q.wait(job, 120)
    again = q.submit_run("label_noise", dict(epochs=2, width=16, n_train=200), store=store, owner="a")  # room
    assert q.wait(again, 120) and again.status == "done"


def test_a_visitor_cannot_raise_its_quota_by_opening_tabs_and_does_not_starve_another(store):
    from workbench.runs.jobs import JobQueue, Quotas

    q = JobQueue(workers=1, quotas=Quotas(per_session=2, total=10))
    long = dict(epochs=100000, width=16, n_train=200)
    hog = [q.submit_run("label_noise", long, store=store, owner=f"session:tab{i}", client="address:192.0.2.9")
           for i in range(2)]
    with pytest.raises(wb.ConfigError, match="at most 2 per visitor"):  # a third tab is the same visitor
        q.submit_run("label_noise", long, store=store, owner="session:tab3", client="address:192.0.2.9")
    deadline = time.time() + 60
    while hog[0].status != "running" and time.time() < deadline:
        time.sleep(0.05)
    other = q.submit_run("label_noise", FAST, store=store, owner="session:x", client="address:192.0.2.10")
    q.cancel(hog[0].id)  # the worker frees: the other visitor's job goes before the hog's second
    assert q.wait(other, 120) and other.status == "done" and hog[1].status in ("queued", "running")
    assert hog[1].started is None or hog[1].started >= other.started
    q.cancel(hog[1].id)
    assert q.wait(hog[1], 120)


def test_a_job_from_a_shared_page_is_stopped_at_the_servers_time_limit_and_kept(store):
    from workbench.runs.jobs import JobQueue, Quotas

    q = JobQueue(workers=1, quotas=Quotas(job_seconds=2))
    long = dict(epochs=100000, width=16, n_train=200)
    job = q.submit_run("label_noise", long, store=store, owner="session:a", client="address:192.0.2.9")
    assert q.wait(job, 120) and job.status == "cancelled"
    assert "stopped after 2 s: this server's limit per job (WORKBENCH_QUOTA_JOB_S)" in job.error
    assert store.get(job.run_id)["status"] == "cancelled" and job.result.step >= 1  # what it computed is kept
    mine = q.submit_run("label_noise", dict(long, epochs=40), store=store, owner="")  # single-user/CLI: no limit
    assert q.wait(mine, 300) and mine.status == "done"


def test_quotas_come_from_the_environment_and_bad_values_are_named(monkeypatch):
    from workbench.runs.jobs import Quotas

    monkeypatch.setenv("WORKBENCH_QUOTA_SESSION", "2")
    monkeypatch.setenv("WORKBENCH_QUOTA_CELLS", "500")
    monkeypatch.setenv("WORKBENCH_QUOTA_JOB_S", "0")
    q = Quotas.from_env()
    assert (q.per_session, q.sweep_cells, q.total, q.job_seconds) == (2, 500, Quotas.total, 0)
    monkeypatch.setenv("WORKBENCH_QUOTA_JOBS", "lots")
    with pytest.raises(wb.ConfigError, match="WORKBENCH_QUOTA_JOBS='lots'"):
        Quotas.from_env()


def test_on_a_shared_server_only_a_jobs_owner_may_cancel_it_and_runs_keep_their_owner(store):
    from workbench.runs.jobs import JobQueue

    q = JobQueue(workers=1)
    job = q.submit_run("label_noise", dict(epochs=100000, width=16, n_train=200), store=store, owner="session:a")
    with pytest.raises(wb.NotOwner, match="queued by another session"):
        q.cancel(job.id, by="session:b")
    assert not job.cancel.is_set() and not job.final
    assert q.cancel(job.id, by="session:a") and q.wait(job, 120) and job.status == "cancelled"
    done = q.submit_run("label_noise", FAST, store=store, owner="user:alice")
    assert q.wait(done, 120) and done.status == "done"
    assert store.get(done.run_id)["owner"] == "user:alice"
    again = q.submit_run("label_noise", FAST, store=store, owner="user:bob", force=True)  # a recompute by another
    assert q.wait(again, 120) and again.status == "done"
    assert store.get(done.run_id)["owner"] == "user:alice"  # a run belongs to whoever first stored it
    store.catalog.unlink()  # the owner is in the file too: a rebuilt catalog keeps it
    assert store.get(done.run_id)["owner"] == "user:alice"
    assert q.cancel(q.submit_run("label_noise", FAST, store=store, owner="x").id)  # by=None: the server itself


def test_a_shared_servers_pages_cancel_only_their_own_jobs(store):
    from workbench.viz.owners import Visitor
    from workbench.viz.page import StudyPage

    q = JobQueue(workers=1)
    a, b = StudyPage("label_noise", store=store, jobs=q), StudyPage("label_noise", store=store, jobs=q)
    a.visitor, b.visitor = Visitor("session:a", True), Visitor("session:b", True)
    b.sweep.visitor = b.visitor
    a.panel(), b.panel()
    for k, v in dict(epochs=100000, width=16, n_train=200).items():
        a.dials[k].value = v
    a._on_run()
    job = a.job
    assert job.owner == "session:a" and not a.cancel_button.disabled
    b.queue.refresh(force=True)
    assert b.queue.table.value["owner"][0] == "another session"
    a.queue.refresh(force=True)
    assert a.queue.table.value["owner"][0] == "you"
    assert "of yours (this server is shared)" in b.queue.panel()[0].object
    b.queue._on_click(type("Click", (), {"column": "cancel", "row": 0})())  # not b's: said, not cancelled
    assert "queued by another session" in b.alert.object and b.alert.visible and not job.cancel.is_set()
    b.queue._on_click(type("Click", (), {"column": "open", "row": 0})())  # b may follow it, not cancel it
    assert b.job is job and b.cancel_button.disabled
    b._on_cancel()
    assert not job.cancel.is_set() and "another session" in b.status.object
    a._on_cancel()
    assert q.wait(job, 120) and job.status == "cancelled"


def test_who_owns_a_page_and_whether_its_server_is_shared(monkeypatch):
    import panel as pn

    from workbench.viz import owners

    monkeypatch.delenv("WORKBENCH_SHARED", raising=False)
    assert owners.Visitor.here() == owners.Visitor("", False)  # a notebook or script: its user owns everything
    visit = {"ip": "127.0.0.1", "user": None}
    request = type("Request", (), {"remote_ip": property(lambda s: visit["ip"])})()
    monkeypatch.setattr(owners, "_context", lambda: type("Ctx", (), {"id": "abc", "request": request})())
    monkeypatch.setattr(type(pn.state), "user", property(lambda s: visit["user"]))
    assert owners.Visitor.here() == owners.Visitor("session:abc", False)  # a visitor on this machine
    visit["ip"] = "192.0.2.7"  # from another machine: shared; quotas count its address, whatever the session
    assert owners.Visitor.here() == owners.Visitor("session:abc", True, "address:192.0.2.7")
    visit["ip"], visit["user"] = "127.0.0.1", "alice"
    assert owners.Visitor.here() == owners.Visitor("user:alice", True, "user:alice")  # signed in: owned by name
    monkeypatch.setenv("WORKBENCH_SHARED", "0")
    assert not owners.Visitor.here().shared and owners.Visitor.here().client == ""
    monkeypatch.setenv("WORKBENCH_SHARED", "1")
    visit["user"] = None
    assert owners.Visitor.here() == owners.Visitor("session:abc", True, "address:127.0.0.1")
    v = owners.Visitor("", True)  # shared, but no owner known: changes nothing
    assert not v.may_change("") and not v.may_change("session:x")


def test_a_jobs_label_names_only_the_dials_set_away_from_their_defaults():
    from workbench.runs.jobs import _label

    # as a page submits them: an empty box for a list dial, a number typed as text, the default width
    assert _label("label_noise", {"transition_matrix": "", "flip_rate": "0.4", "width": 512, "epochs": 7}) == \
        "epochs=7"
    assert _label("label_noise", {}) == "defaults"
