"""The job queue a dashboard server shares among all its browser sessions.

Every page submits its runs and sweeps here, and every page sees every job: queued, running, done, diverged,
failed, cancelled, with its progress. Jobs run in a few worker threads, never on the server's event loop (torch
releases the GIL inside its kernels, so the loop keeps answering widget events while a job trains). A job keeps what
its run emitted — records, kept arrays, stored sweep parts — in order, so any number of pages can follow it from any
point: the page that started it, or another session that opens it from the queue. Pages poll the queue from their
own periodic callbacks (that is the throttle); nothing here touches a widget or imports Panel.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..errors import ConfigError, NotOwner
from ..engine.events import PartStored, Recorded
from ..studies import get as get_study

FINAL = ("done", "diverged", "failed", "cancelled")
DASK_FOLLOWERS = 16  # jobs submitted to a Dask cluster at once (the threads here only wait on them; Dask queues)
SWITCH_S = 0.001  # the GIL switch interval of a process that serves pages and trains (see shared())
STATUSES = ("queued", "running", *FINAL)


def default_workers() -> int:
    """Jobs run at once: $WORKBENCH_JOB_WORKERS, else one per 4 cores (1 to 4): a 2-core laptop trains one model
    group at a time (two would each run at half speed and fight the server for the cores)."""
    text = os.environ.get("WORKBENCH_JOB_WORKERS", "")
    if text:
        if not text.isdigit() or not 1 <= int(text) <= 64:
            raise ConfigError("WORKBENCH_JOB_WORKERS", text, "an integer from 1 to 64")
        return int(text)
    return max(1, min(4, (os.cpu_count() or 2) // 4))


def _env_number(name: str, default, kind=int, low=1):
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ConfigError(name, text, f"a number of at least {low}")
    return value


@dataclass
class Quotas:
    """What one shared server lets its sessions queue (a job outlives the page that started it): queued and
    running jobs per session (and per visitor: a signed-in user, else a browser's address, so opening more tabs
    does not raise it) and in all, cells per sweep, one job's estimated memory against what the machine has
    available, and how long a job from a shared page may run. From the environment: WORKBENCH_QUOTA_SESSION,
    WORKBENCH_QUOTA_JOBS, WORKBENCH_QUOTA_CELLS, WORKBENCH_QUOTA_MEMORY (a share of the available memory, 0-1),
    WORKBENCH_QUOTA_JOB_S (seconds; 0: no limit)."""

    per_session: int = 4
    total: int = 32
    sweep_cells: int = 2000
    memory_share: float = 0.5
    job_seconds: float = 3600.0

    @classmethod
    def from_env(cls) -> "Quotas":
        share = _env_number("WORKBENCH_QUOTA_MEMORY", cls.memory_share, float, 0.01)
        if share > 1:
            raise ConfigError("WORKBENCH_QUOTA_MEMORY", share, "a share of the available memory, from 0.01 to 1")
        return cls(_env_number("WORKBENCH_QUOTA_SESSION", cls.per_session),
                   _env_number("WORKBENCH_QUOTA_JOBS", cls.total),
                   _env_number("WORKBENCH_QUOTA_CELLS", cls.sweep_cells), share,
                   _env_number("WORKBENCH_QUOTA_JOB_S", cls.job_seconds, float, 0))


def available_memory() -> int:
    """Bytes of memory available to a job now (MemAvailable), or 4 GiB where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info.get("MemAvailable", 4 << 30)
    except (OSError, ValueError, IndexError):
        return 4 << 30


@dataclass(eq=False)
class Job:
    """One queued run or sweep. `events` grows while it runs: typed events (engine.events), in order."""

    id: str
    kind: str  # "run" or "sweep"
    study: str
    dials: dict
    label: str  # what the job table shows: the dials that differ from the defaults, or the sweep's grid
    total: int  # progress units: steps/epochs of a run, cells of a sweep
    options: dict = field(default_factory=dict)  # force, store; grid and seeds of a sweep
    owner: str = ""  # who queued it: a browser session, or a signed-in user (viz/owners.py)
    client: str = ""  # on a shared server, the visitor behind it (a signed-in user or an address): its quotas
    status: str = "queued"
    done: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: object = None  # the Run or Sweep once it ends
    error: str | None = None
    events: list = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    expired: bool = False  # stopped by the server's time limit per job (Quotas.job_seconds)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def run_id(self) -> str:
        return getattr(self.result, "id", "") or ""

    def since(self, cursor: int) -> tuple[list, bool]:
        """(the events from `cursor` on, whether the job has ended): what a follower reads each tick. The status is
        read before the events, so an ended job's list is complete."""
        ended = self.final
        return self.events[cursor:], ended

    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def row(self) -> dict:
        status = "cancelling" if self.status == "running" and self.cancel.is_set() else self.status
        return {"job": self.id, "study": self.study, "kind": self.kind, "dials": self.label, "status": status,
                "progress": round(100 * min(self.done, self.total) / max(self.total, 1)),
                "seconds": round(self.seconds(), 1), "run": self.run_id, "error": self.error or ""}


def _label(study: str, dials: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in get_study(study).changed(dials).items()) or "defaults"


class JobQueue:
    """Submit, follow and cancel jobs; `version` changes whenever a job's status or progress does."""

    def __init__(self, workers: int | None = None, keep: int = 200, quotas: Quotas | None = None,
                 scheduler: str | None = None):
        # scheduler: a Dask scheduler's address: every job is a task (a sweep, a task per group) on its cluster,
        # and the threads here only submit, follow and store; None: the jobs train in the threads here
        self.scheduler = scheduler
        self.cluster = None
        self._where: tuple[float, dict] | None = None  # where(): (when asked, what the scheduler said)
        self.workers = workers or (default_workers() if scheduler is None or os.environ.get("WORKBENCH_JOB_WORKERS")
                                   else DASK_FOLLOWERS)
        self.quotas = quotas or Quotas.from_env()
        self.keep = keep  # finished jobs remembered (the oldest are forgotten first; their runs stay in the store)
        self.version = 0
        self._jobs: dict[str, Job] = {}  # in submission order
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # a job was queued
        self._served: dict[str, float] = {}  # when each visitor's last job started (the round-robin's order)
        self._threads: list[threading.Thread] = []

    # -- submitting ---------------------------------------------------------------------------------------------
    def submit_run(self, study: str, dials: dict, *, force: bool = False, store=None, owner: str = "",
                   client: str = "") -> Job:
        """Queue one run. Bad dials raise ConfigError here, before anything is queued. owner: who may cancel it;
        client: the visitor of a shared page (its quotas, its fair share of the workers and the time limit)."""
        cls = get_study(study)
        cfg = cls.configure(**dials)
        self._check_quota(owner, client, [cfg])
        total = int(getattr(cfg, cls.axis + "s", 0) or 1)
        return self._add(Job(_new_id(), "run", study, dict(dials), _label(study, dials), total,
                             dict(force=force, store=store), owner, client))

    def submit_sweep(self, study: str, grid: dict, seeds, dials: dict, *, force: bool = False, store=None,
                     owner: str = "", client: str = "") -> Job:
        """Queue a sweep over grid × seeds; a bad grid or dial raises ConfigError here."""
        from .sweep import plan

        n = 1  # what can never run is said first, then what could run later; both before the grid is laid out
        for values in (grid.values() if isinstance(grid, dict) else ()):
            n *= len(values) if hasattr(values, "__len__") else 1
        n *= seeds if isinstance(seeds, int) else len(seeds) if hasattr(seeds, "__len__") else 1
        if n > self.quotas.sweep_cells:
            raise ConfigError("sweep", f"{n} cells", f"at most {self.quotas.sweep_cells} cells per sweep on this "
                                                     "server (WORKBENCH_QUOTA_CELLS); fewer values or seeds")
        self._check_quota(owner, client)
        _, cells, config, _ = plan(study, grid, seeds, dials)
        self._check_quota(owner, client, cells)
        seeds = config["seeds"]
        label = " × ".join(f"{k} ({len(v)})" for k, v in config["grid"].items()) + f", {len(config['seeds'])} seeds"
        return self._add(Job(_new_id(), "sweep", study, dict(dials), label, len(cells),
                             dict(force=force, store=store, grid=grid, seeds=seeds, axes=config["grid"]),
                             owner, client))

    def _check_quota(self, owner: str, client: str = "", cells: list = ()) -> None:
        """Refuse a job the server's quotas do not allow, saying which and why (ConfigError, before queueing): a model
        too big for the machine first (it could never run), then the counts of queued and running jobs."""
        q = self.quotas
        if cells:
            need = max(c.model_bytes() for c in cells)
            room = int(available_memory() * q.memory_share)
            if need > room:
                raise ConfigError("memory", f"about {need / 2**30:.1f} GiB for one model",
                                  f"at most {room / 2**30:.1f} GiB ({q.memory_share:.0%} of the memory available "
                                  "now, WORKBENCH_QUOTA_MEMORY): a smaller width, depth or data set")
        active = [j for j in self.jobs() if not j.final]
        mine = sum(1 for j in active if j.owner == owner or (client and j.client == client))
        if mine >= q.per_session:
            raise ConfigError("queue", f"{mine} of your jobs queued or running",
                              f"at most {q.per_session} per visitor on this server (a signed-in user, else a "
                              "browser's address; WORKBENCH_QUOTA_SESSION): wait for one to end, or cancel one in "
                              "the Jobs tab")
        if len(active) >= q.total:
            raise ConfigError("queue", f"{len(active)} jobs queued or running",
                              f"at most {q.total} on this server (WORKBENCH_QUOTA_JOBS): try again when some end")

    def _add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
            self.version += 1
            if len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, daemon=True, name=f"wb-job-worker-{len(self._threads)}")
                self._threads.append(t)
                t.start()
            self._wake.notify()
        return job

    def _next(self) -> Job | None:
        """The queued job to start next (under the lock), round-robin over visitors: the oldest job of the visitor
        served longest ago, so one visitor's long queue does not starve another's single job. None if none waits."""
        queued = [j for j in self._jobs.values() if j.status == "queued"]
        if not queued:
            return None
        job = min(queued, key=lambda j: (self._served.get(j.client or j.owner, 0.0), j.created))
        self._served[job.client or job.owner] = time.monotonic()
        return job

    def _forget_old(self) -> None:
        ended = [j for j in self._jobs.values() if j.final]
        for j in ended[:max(0, len(ended) - self.keep)]:
            del self._jobs[j.id]

    # -- reading ------------------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Every remembered job, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise ConfigError("job", job_id, "the id of a job in the queue")
            return self._jobs[job_id]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for j in self.jobs():
            out[j.status] += 1
        return out

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until the job ends (tests and scripts; pages poll instead)."""
        return job.ended.wait(timeout)

    # -- cancelling ---------------------------------------------------------------------------------------------
    def cancel(self, job_id: str, by: str | None = None) -> bool:
        """Stop a job: a queued one never starts; a running one stops at its next step and is stored as cancelled.
        False if it had already ended. `by`: who asks, on a shared server (None: the server itself, or single-user
        mode); NotOwner if the job is someone else's."""
        job = self.get(job_id)
        if by is not None and job.owner != by:
            raise NotOwner(f"job {job_id} was queued by another session: on a shared server only its owner may "
                           "cancel it")
        with self._lock:
            if job.final:
                return False
            job.cancel.set()
            if job.status == "queued":
                self._end(job, "cancelled")
            self.version += 1
        return True

    # -- running (worker threads) -------------------------------------------------------------------------------
    def _work(self) -> None:
        lower_priority()
        while True:
            with self._wake:
                job = self._next()
                while job is None:
                    self._wake.wait()
                    job = self._next()
                job.status, job.started = "running", time.time()
                self.version += 1
            limit = self.quotas.job_seconds if job.client else 0  # jobs from shared pages only
            timer = threading.Timer(limit, self._expire, args=(job,)) if limit else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                result = self._execute(job)
                status, error = result.status, result.error
            except Exception as e:  # noqa: BLE001 - a job that cannot even start is a failed job, shown in the table
                result, status, error = None, "failed", f"{type(e).__name__}: {e}"
            if timer is not None:
                timer.cancel()
            if job.expired:
                error = (f"stopped after {_seconds(limit)}: this server's limit per job (WORKBENCH_QUOTA_JOB_S); "
                         "what it computed is kept" + (f" ({error})" if error else ""))
            with self._lock:
                job.result = result
                self._end(job, status, error)
                self.version += 1

    def _expire(self, job: Job) -> None:
        """A job from a shared page ran past the server's time limit: stopped like a cancel, and said so."""
        job.expired = True
        job.cancel.set()

    def _execute(self, job: Job):
        from .run import run
        from .sweep import sweep

        opts = job.options
        where = dict(executor="dask", scheduler=self.scheduler) if self.scheduler else dict(executor="local")
        if job.kind == "run":
            return run(job.study, sinks=[self._sink(job)], array_sinks=[job.events.append],
                       cancel=job.cancel, progress=False, force=opts["force"], store=opts["store"], owner=job.owner,
                       **where, **job.dials)
        return sweep(job.study, opts["grid"], opts["seeds"], sinks=[self._sink(job)], cancel=job.cancel,
                     progress=False, force=opts["force"], store=opts["store"], owner=job.owner, **where, **job.dials)

    def where(self) -> dict:
        """Where the jobs run: {"backend": "threads" or "dask", "workers", "scheduler", "dashboard" (the Dask
        dashboard's address, "" if it has none)}."""
        if not self.scheduler:
            return {"backend": "threads", "workers": self.workers, "scheduler": "", "dashboard": ""}
        if self._where and time.monotonic() - self._where[0] < 5:  # every page's table asks; the scheduler, once
            return self._where[1]
        from .remote import client_for

        try:
            client = client_for(self.scheduler)
            link, workers = client.dashboard_link or "", len(client.scheduler_info(n_workers=-1)["workers"])
        except Exception:  # noqa: BLE001 - a scheduler that is gone: said, not raised, on a page
            link, workers = "", 0
        out = {"backend": "dask", "workers": workers, "scheduler": self.scheduler, "dashboard": link}
        self._where = (time.monotonic(), out)
        return out

    def _sink(self, job: Job):
        axis = get_study(job.study).axis

        def put(item) -> None:
            event = Recorded(item) if isinstance(item, dict) else item  # a run's sinks get bare records
            job.events.append(event)  # list.append is atomic: readers slice what is there
            if isinstance(event, Recorded) and event.task is None and axis in event.record:
                job.done = int(event.record[axis])
                self.version += 1
            elif isinstance(event, PartStored):
                job.done += int(event.dataset.sizes.get("model", 1))
                self.version += 1
        return put

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        if status == "done":
            job.done = job.total
        job.ended.set()


def _seconds(s: float) -> str:
    return f"{s:g} s" if s < 120 else f"{s / 60:g} min" if s < 7200 else f"{s / 3600:g} h"


def lower_priority() -> None:
    """Nice this thread (and the torch threads it starts), so the server's event loop and the browser
    sessions get a core before training does. On Linux a thread has its own nice value; elsewhere nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _new_id() -> str:
    return uuid.uuid4().hex[:8]


_shared: JobQueue | None = None
_shared_lock = threading.Lock()


def shared() -> JobQueue:
    """The queue of this process: `panel serve` runs every session in one process, so every page sees it.

    Creating it shortens the interpreter's GIL switch interval to SWITCH_S: a training thread holds the GIL between
    torch kernels, and the event loop would otherwise wait up to 5 ms for it at every hand-over (widget-event p95
    with five sessions' jobs training: 190–305 ms at 1 ms against 217–357 ms at 5 ms, bench/RESULTS.md)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from .remote import scheduler_address

            sys.setswitchinterval(SWITCH_S)
            address, cluster = scheduler_address(), None
            if address is None and os.environ.get("WORKBENCH_DASK") == "local":  # workbench serve --dask
                import atexit

                from .cluster import LocalProcesses

                cluster = LocalProcesses().start()
                atexit.register(cluster.stop)
                address = cluster.address
            _shared = JobQueue(scheduler=address)
            _shared.cluster = cluster  # the cluster this process started for its jobs (stopped at exit), if any
        return _shared
