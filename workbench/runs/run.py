"""A Run: a validated config, its id (the config's hash), and its results as an xarray.Dataset."""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
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
from ..errors import Cancelled, Diverged
from ..probes.metrics import lower_is_better
from .store import Store, check_run_id

log = logging.getLogger("workbench")


def code_version() -> str:
    from .. import __version__

    return __version__


def run_id(study: str, config: dict) -> str:
    """sha256 of the canonical JSON of (study, dials, code version), first 12 hex digits."""
    blob = json.dumps({"study": study, "config": config, "version": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    config = property(lambda self: self.meta["params"])
    error = property(lambda self: self.meta.get("error"))
    step = property(lambda self: self.meta.get("step"), doc="The step at which a diverged run went non-finite.")

    @property
    def ds(self) -> xr.Dataset:
        if self._ds is None:
            self._ds = (self._store or Store()).load_dataset(self.id)
        return self._ds

    @property
    def path(self) -> Path:
        return (self._store or Store()).root / self.meta["path"]

    def summary(self) -> dict:
        """Final and best value of each scalar metric (best: min for losses and ECE, max otherwise)."""
        return summarize(self.ds, get_study(self.study).axis)

    def plot(self):
        """The study's figures (HoloViews), as the app shows them."""
        from .. import viz

        return viz.overview(self)

    def __repr__(self):
        extra = f", step={self.step}" if self.status == "diverged" else (f", error={self.error!r}" if self.error else "")
        return f"Run(id={self.id!r}, study={self.study!r}, status={self.status!r}{extra})"


def summarize(ds: xr.Dataset, axis: str) -> dict:
    out = {}
    for name, var in ds.data_vars.items():
        if var.dims != (axis,) or name == "step" or var.size == 0:
            continue
        v = var.values.astype(float)
        lower = lower_is_better(name)
        finite = v[np.isfinite(v)]
        best = (finite.min() if lower else finite.max()) if finite.size else float("nan")
        out[name] = {"final": float(v[-1]), "best": float(best),
                     "best_at": int(ds[axis].values[np.nanargmin(v) if lower else np.nanargmax(v)]) if finite.size else None}
    return out


def to_dataset(ctx: Context, axis: str) -> xr.Dataset:
    """Records (one dict per axis step) and kept arrays -> one Dataset."""
    keys = [k for k in (ctx.records[0] if ctx.records else {}) if k != axis]
    index = np.array([r[axis] for r in ctx.records], dtype=np.int64)
    data = {}
    for k in keys:
        values = np.array([r.get(k, np.nan) for r in ctx.records])  # (steps,) or (steps, K) for a group
        data[k] = ((axis,), values) if values.ndim == 1 else (("model", axis), values.T)
    data.update(ctx.arrays)
    return xr.Dataset(data, coords={axis: index, **ctx.coords})


def run(study: str, *, force: bool = False, device: str | None = None, sinks: Iterable[Callable] = (),
        cancel: threading.Event | None = None, progress: bool = True, store: Store | None = None,
        tags: Iterable[str] = (), array_sinks: Iterable[Callable] = (), **dials) -> Run:
    """Run a study with the given dials (the rest at their defaults); blocks and returns a Run.

    sinks get every record as it is emitted; array_sinks get (name, dims, values, coords) of every array the run
    keeps (spectra snapshots, per-example losses), as it is kept.

    The same config returns the stored result (done or diverged) unless force=True. Bad dials raise ConfigError
    (a ValueError) before anything runs. Divergence, failure and cancellation are statuses, not exceptions.
    """
    cls = get_study(study)
    cfg = cls.configure(**dials)
    config = cfg.config()
    rid = run_id(study, config)
    store = store or Store()
    if not force:
        meta = store.get(rid)
        if meta and meta["status"] in ("done", "diverged") and (store.root / meta["path"]).is_file():
            return Run(meta, store=store)

    sinks = list(sinks)
    bar = None
    total = getattr(cfg, cls.axis + "s", None)
    if progress:
        bar = _tqdm_sink(cls, total)
        sinks.append(bar)
    ctx = Context(pick_device(device), sinks, cancel, total=total, array_sinks=list(array_sinks))
    meta = {"id": rid, "study": study, "params": config, "created": now(), "device": str(ctx.device),
            "tags": list(tags), "error": None, "step": None}
    t0 = time.perf_counter()
    try:
        cfg.execute(ctx)
        meta["status"] = "done"
    except Diverged as e:
        meta.update(status="diverged", step=e.step, error=str(e))
    except (Cancelled, KeyboardInterrupt):
        meta.update(status="cancelled", step=ctx.last_step)
    except Exception as e:  # a failed run is a result too: recorded with its message
        log.exception("run %s of %s failed", rid, study)
        meta.update(status="failed", step=ctx.last_step, error=f"{type(e).__name__}: {e}")
    finally:
        if bar is not None:
            bar.close()
    meta["finished"] = now()
    meta["wall_s"] = round(time.perf_counter() - t0, 3)
    ds = to_dataset(ctx, cls.axis)
    ds.attrs.update({
        "run_id": rid, "study": study, "status": meta["status"], "config": json.dumps(config, sort_keys=True),
        "error": meta["error"] or "", "step": -1 if meta["step"] is None else int(meta["step"]),
        "device": meta["device"], "wall_s": meta["wall_s"], "created": meta["created"], "finished": meta["finished"],
        "versions": json.dumps(versions()), "git_commit": git_commit(),
    })
    store.save(meta, ds)
    saved = store.get(rid)
    if meta["status"] == "failed":
        log.warning("run %s failed: %s", rid, meta["error"])
    return Run(saved, ds=ds, store=store)


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
