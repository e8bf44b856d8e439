"""A Run: a validated config, its id (the config's hash), and its results as an xarray.Dataset."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import xarray as xr

from ..studies import get as get_study
from ..engine import Context, pick_device
from ..engine.events import ArrayKept
from ..errors import Cancelled, ConfigError, Diverged
from .identity import code_fingerprint, identity, make_id
from .store import Store, check_run_id, check_tags

log = logging.getLogger("workbench")


def code_version() -> str:
    from .. import __version__

    return __version__


def run_id(cfg) -> str:
    """A configured study's run id: its dials, the fingerprint of the code that computes it and the digest of its
    data files (runs.identity)."""
    return make_id({"study": type(cfg).key, "config": cfg.config()}, identity(cfg))


def made_by_current_code(meta: dict) -> bool:
    """Whether a stored run (or sweep) was computed by the study's code as it is now (False for runs stored
    before the code fingerprint was kept, and for studies no longer defined)."""
    from ..studies import names

    return meta.get("study") in names() and meta.get("code") == code_fingerprint(get_study(meta["study"]))


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict:
    import torch

    return {"workbench": code_version(), "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xr.__version__, "python": platform.python_version()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """One run of a study. `ds` is loaded from the store on first use."""

    def __init__(self, meta: dict, ds: xr.Dataset | None = None, store: Store | None = None):
        self.meta = meta
        self._ds = ds
        self._store = store

    id = property(lambda self: self.meta["id"])
    study = property(lambda self: self.meta["study"])
    status = property(lambda self: self.meta["status"])
    current = property(lambda self: made_by_current_code(self.meta),
                       doc="Whether the study's code as it is now computed this result (else: other code made it).")
    config = property(lambda self: self.meta["params"])
    error = property(lambda self: self.meta.get("error"))
    step = property(lambda self: self.meta.get("step"), doc="The step at which a diverged run went non-finite.")

    @property
    def ds(self) -> xr.Dataset:
        if self._ds is None:
            self._ds = (self._store or Store()).load_dataset(self.id, self.meta)
        return self._ds

    @property
    def path(self) -> Path:
        return (self._store or Store()).file(self.meta)

    @property
    def attempt(self) -> int | None:
        """None for a run's result; N for an attempt kept beside it (a recompute that was cancelled or failed)."""
        return self.meta.get("attempt")

    def summary(self) -> dict:
        """Final and best value of each declared metric of the run's axis (best in its declared direction; none
        for a metric without one)."""
        return summarize(self.ds, get_study(self.study))

    def plot(self):
        """The study's figures (HoloViews), as the app shows them."""
        from .. import viz

        return viz.overview(self)

    def __repr__(self):
        extra = f", step={self.step}" if self.status == "diverged" else (f", error={self.error!r}" if self.error else "")
        if not self.current:
            extra += ", made by other code"
        return f"Run(id={self.id!r}, study={self.study!r}, status={self.status!r}{extra})"


def summarize(ds: xr.Dataset, cls) -> dict:
    """{metric: {final, best, best_at}} for the study's declared record metrics in `ds` (a single run's)."""
    out = {}
    for m in cls.metrics:
        var = ds.get(m.name)
        if var is None or var.dims != (cls.axis,) or var.size == 0:
            continue
        v = var.values.astype(float)
        i = m.best_index(v)
        out[m.name] = {"final": float(v[-1]), "best": float(v[i]) if i is not None else float("nan"),
                       "best_at": int(ds[cls.axis].values[i]) if i is not None else None}
    return out


def to_dataset(ctx: Context, axis: str) -> xr.Dataset:
    """Records (one dict per axis step) and kept arrays -> one Dataset. Every key of any record is kept (nan in
    the records that lack it), in the order of first appearance."""
    keys = [k for k in dict.fromkeys(k for r in ctx.records for k in r) if k != axis]
    index = np.array([r[axis] for r in ctx.records], dtype=np.int64)
    data = {}
    for k in keys:
        values = np.array([r.get(k, np.nan) for r in ctx.records])  # (steps,) or (steps, K) for a group
        data[k] = ((axis,), values) if values.ndim == 1 else (("model", axis), values.T)
    data.update(ctx.arrays)
    return xr.Dataset(data, coords={axis: index, **ctx.coords})


def run(study: str, *, force: bool = False, device: str | None = None, sinks: Iterable[Callable] = (),
        cancel: threading.Event | None = None, progress: bool = True, store: Store | None = None,
        tags: Iterable[str] = (), array_sinks: Iterable[Callable] = (), owner: str = "",
        executor: str | None = None, scheduler: str | None = None, client=None, **dials) -> Run:
    """Run a study with the given dials (the rest at their defaults); blocks and returns a Run.

    sinks get every record (a dict) as it is emitted; array_sinks get an engine.events.ArrayKept for every array
    the run keeps (spectra snapshots, per-example losses), as it is kept, and a Preview for every passing one.
    owner: who the run is stored for on a shared dashboard (its job queue sets it; '' : the store's own user).

    executor: "local" (this process) or "dask" (one task on the cluster at `scheduler`, else
    $DASK_SCHEDULER_ADDRESS, or the given `client`); by default "dask" when $DASK_SCHEDULER_ADDRESS is set. On Dask
    the records still reach `sinks` while it trains (array_sinks get the kept arrays only with the result), cancel
    stops it at its next step, and this process alone writes the store (runs.remote).

    The same config returns the stored result (done or diverged) unless force=True. Bad dials raise ConfigError
    (a ValueError) before anything runs. Divergence, failure and cancellation are statuses, not exceptions.
    """
    from .remote import client_for, pick_executor, remote_device, run_remote, scheduler_address

    cls = get_study(study)
    cfg = cls.configure(**dials)
    remote = pick_executor(executor, scheduler, client) == "dask"
    if remote and client is None and scheduler_address(scheduler) is None:
        raise ConfigError("scheduler", None, "a Dask scheduler address (or $DASK_SCHEDULER_ADDRESS) for executor "
                          "'dask'")
    # an absent device is refused, like a bad dial, before any work; on Dask the worker resolves it (its devices,
    # not this machine's), and one that lacks it fails the run saying so
    dev = (None if device in (None, "auto") else remote_device(device)) if remote else pick_device(device)
    tags = check_tags(tags)  # a string is split on commas: tags="baseline" is one tag
    config = cfg.config()
    ident = identity(cfg)
    rid = make_id({"study": study, "config": config}, ident)  # = run_id(cfg), with the identity kept
    store = store or Store()
    if not force:
        meta = store.cached(rid)
        if meta:
            return Run(meta, store=store)

    sinks = list(sinks)
    bar = None
    total = getattr(cfg, cls.axis + "s", None)
    if progress:
        bar = _tqdm_sink(cls, total)
        sinks.append(bar)
    created, t0 = now(), time.perf_counter()
    try:
        if remote:
            out = run_remote(client or client_for(scheduler_address(scheduler)), study, config,
                             None if dev is None else str(dev), ident, cls.axis, sinks, cancel or threading.Event())
            status, step, error, ds, used = out["status"], out["step"], out["error"], out["ds"], out["device"]
            for name in ds.data_vars if array_sinks else ():  # the kept arrays, now that they are here
                if ds[name].dims != (cls.axis,):
                    coords = {k: v.values for k, v in ds[name].coords.items() if k != cls.axis}
                    event = ArrayKept(name, ds[name].dims, ds[name].values, coords)
                    for sink in array_sinks:
                        sink(event)
        else:
            status, step, error, ds, used = execute(cls, cfg, dev, sinks, cancel, array_sinks, f"run {rid} of {study}",
                                                    total)
    finally:
        if bar is not None:
            bar.close()
    meta = record(rid, study, "run", config, ident, status, step, error, created, t0, used, tags, ds, owner)
    saved = store.save(meta, ds)  # a cancelled or failed attempt beside a finished result: kept as an attempt
    if meta["status"] == "failed":
        log.warning("run %s failed: %s", rid, meta["error"])
    return Run(saved, ds=ds, store=store)


def execute(cls, cfg, dev, sinks, cancel, array_sinks=(), what: str = "run", total: int | None = None):
    """Train one configured run here: (status, step, error, dataset, device), whatever the outcome."""
    ctx = Context(dev, sinks, cancel, total=total, array_sinks=list(array_sinks))
    status, step, error = outcome(lambda: cfg.execute(ctx), ctx, what)
    return status, step, error, to_dataset(ctx, cls.axis), str(ctx.device)


# -- the run lifecycle: one status mapping and one metadata record, for single runs and sweeps alike -----------------
def outcome(work: Callable[[], None], ctx: Context, what: str) -> tuple[str, int | None, str | None]:
    """Run `work` and say how it ended: (status, step, error). done; diverged (every model went non-finite: the
    step where the last did); cancelled (asked to stop, or interrupted: the last step reached); failed (any other
    exception, logged: its message). Divergence, failure and cancellation are results, not exceptions."""
    try:
        work()
        return "done", None, None
    except Diverged as e:
        return "diverged", e.step, str(e)
    except (Cancelled, KeyboardInterrupt):
        return "cancelled", ctx.last_step, None
    except Exception as e:  # noqa: BLE001 - a failed run is a result too: recorded with its message
        log.exception("%s failed", what)
        return "failed", ctx.last_step, f"{type(e).__name__}: {e}"


def record(rid: str, study: str, kind: str, params: dict, ident: dict, status: str, step, error, created: str,
           t0: float, device, tags, ds: xr.Dataset, owner: str = "") -> dict:
    """The metadata of a finished run or sweep (the catalog row), also stamped on its dataset's attributes so
    that the file alone says what made it."""
    meta = {"id": rid, "study": study, "kind": kind, "params": params, "status": status, "step": step,
            "error": error, "created": created, "finished": now(), "wall_s": round(time.perf_counter() - t0, 3),
            "device": str(device), "tags": list(tags), "code": ident["code"], "data": ident["data"],
            "owner": owner}
    ds.attrs.update({
        "run_id": rid, "study": study, "kind": kind, "status": status, "config": json.dumps(params, sort_keys=True),
        "error": error or "", "step": -1 if step is None else int(step), "device": meta["device"],
        "wall_s": meta["wall_s"], "created": created, "finished": meta["finished"],
        "versions": json.dumps(versions()), "git_commit": git_commit(), "code": ident["code"],
        "data": json.dumps(ident["data"], sort_keys=True), "tags": ",".join(meta["tags"]),
        "owner": owner,
    })
    return meta


def load(run_id: str, store: Store | None = None) -> Run:
    """A Run from the store by id."""
    from ..errors import RunNotFound

    store = store or Store()
    meta = store.get(check_run_id(run_id))
    if meta is None:
        raise RunNotFound(f"no run {run_id!r} in {store.catalog}")
    if meta.get("kind") == "sweep":
        from .sweep import Sweep

        return Sweep(meta, store=store)
    return Run(meta, store=store)


class _TqdmSink:
    def __init__(self, cls, total):
        from tqdm.auto import tqdm

        self.axis = cls.axis
        self.show = [m for group in cls.curves.values() for m in group][:3]
        self.bar = tqdm(total=total, unit=cls.axis, desc=cls.key, leave=True, dynamic_ncols=True)

    def __call__(self, rec):
        if rec[self.axis] > self.bar.n:
            self.bar.update(rec[self.axis] - self.bar.n)
        self.bar.set_postfix({k: f"{rec[k]:.3g}" for k in self.show if k in rec}, refresh=False)

    def close(self):
        self.bar.close()


def _tqdm_sink(cls, total):
    return _TqdmSink(cls, total)
