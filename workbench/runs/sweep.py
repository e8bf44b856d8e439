"""Sweeps: a grid over dials × seeds, trained group by group, stored part by part, resumable, on Dask if asked.

Cells that differ only in shape-keeping dials (the study's `batchable`: seed, flip rate, learning rate, ...) train
together as one program, and cells that differ only in how a trained model is sampled from (its `sampling` dials: a
sampler, its steps) share one training; dials that change shapes (width, depth, ...) split the grid into groups.
Each group (or a memory-sized chunk of one) is one task. Every finished task is written to the store atomically before the next is
awaited; a rerun of a killed sweep computes only the missing tasks. Workers compute and return; only the client
writes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import xarray as xr

from ..engine import Context, pick_device
from ..errors import Cancelled, ConfigError
from ..studies import get as get_study
from ..studies.base import coerce
from ..engine.events import PartStored, Recorded, TaskStarted
from .identity import code_fingerprint, data_digests, make_id, user_code, with_user_code
from .remote import (Follow, RemoteCancel, SchedulerLost, client_for, gpu_resources, pick_executor, plain,
                     scheduler_address)
from .run import Run, now, outcome, record, to_dataset
from .store import STALE_S, Store, check_tags, write_atomic

log = logging.getLogger("workbench")
MAX_MODELS = 64  # models per task at most: keeps tasks short enough to resume and to spread over workers


class Sweep(Run):
    """A finished (or partly finished) sweep. `ds` has one dim per swept dial, plus seed and the study's axis."""

    @property
    def grid(self) -> dict:
        return self.config["grid"]

    def summary(self) -> dict:
        return {}

    def phase_diagram(self, metric: str, x: str, y: str, **kw):
        from .. import viz

        return viz.phase_diagram(self.ds, metric, x=x, y=y, **kw)

    def __repr__(self):
        dims = ", ".join(f"{k}={len(v)}" for k, v in self.grid.items())
        return f"Sweep(id={self.id!r}, study={self.study!r}, status={self.status!r}, grid=({dims}), " \
               f"seeds={self.config['seeds']})"


def parse_values(text: str) -> list:
    """CLI grid syntax: 'a:b:n' (n evenly spaced values from a to b) or 'v1,v2,...'."""
    parts = text.split(":")
    if len(parts) == 3:
        try:
            a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ConfigError("grid", text, "START:STOP:COUNT or a comma-separated list") from None
        if n < 1:
            raise ConfigError("grid", text, "a COUNT of at least 1")
        return [round(float(v), 12) for v in np.linspace(a, b, n)]
    return [v.strip() for v in text.split(",") if v.strip()]


def plan(study: str, grid: dict, seeds: Iterable[int] | int, dials: dict):
    """Validate everything and lay out the cells. Nothing runs and nothing is written here. `seeds`: a list of
    seeds, or a count (5: seeds 0-4), as the CLI and the dashboard read it."""
    cls = get_study(study)
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("seeds", seeds, "a count of at least 1, or a list of seeds")
        seeds = list(range(int(seeds)))
    elif isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ConfigError("seeds", seeds, "a list of seeds (e.g. [0, 1, 2]) or a count (3: seeds 0, 1, 2)")
    names = cls.dials()
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("grid", grid, "a dict of at least one dial -> list of values")
    clean = {}
    for name, values in grid.items():
        if name == "seed":
            raise ConfigError("grid", name, "dials other than seed (pass seeds=[...] instead)")
        if name not in names:
            raise ConfigError("grid", name, f"dials of study {study!r}: {', '.join(names)}")
        if name in dials:
            raise ConfigError(name, dials[name], "either a grid dial or a fixed dial, not both")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ConfigError(f"grid.{name}", values, "a list of values")
        values = [coerce(names[name], name, v) for v in values]
        if not values:
            raise ConfigError(f"grid.{name}", values, "a non-empty list")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"grid.{name}", values, "distinct values")
        clean[name] = values
    seeds = [coerce(names["seed"], "seeds", s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", seeds, "a non-empty list of distinct seeds")
    if "seed" in dials:
        raise ConfigError("seed", dials["seed"], "seeds=[...] for a sweep")
    cls.configure(**dials)  # the fixed dials alone, for a clear message
    cells = []
    for combo in itertools.product(*clean.values(), seeds):
        values = dict(zip(list(clean) + ["seed"], combo))
        cells.append(cls.configure(**dials, **values))
    fixed = {k: v for k, v in cells[0].config().items() if k not in clean and k != "seed"}
    config = {"grid": clean, "seeds": seeds, "fixed": fixed}
    return cls, cells, config, make_id({"study": study, "sweep": config}, sweep_identity(cells))


def sweep_identity(cells: list) -> dict:
    """The code fingerprint (one study: one fingerprint) and the digests of every cell's data files."""
    data = {}
    for cell in cells:
        data.update(data_digests(cell))
    return {"code": with_user_code(code_fingerprint(type(cells[0])), user_code(cells)), "data": data}


def tasks(cls, cells: list, device, budget: int | None = None) -> list[list]:
    """Group cells by their shape-changing dials; split groups into chunks that fit in memory (`budget` bytes, else
    what `device` has here). The cells of one training (differing only in sampling dials) stay in one chunk, side by
    side, so that it trains once (split only where one training alone has more cells than a chunk holds)."""
    groups: dict[tuple, list] = {}
    for cell in cells:
        groups.setdefault(cell.group_key(), []).append(cell)
    budget = budget or _memory_budget(device)
    out = []
    for members in groups.values():
        per_model = max(1, members[0].model_bytes())
        size = int(max(1, min(MAX_MODELS, budget // per_model)))
        trainings: dict[str, list] = {}
        for cell in members:
            trainings.setdefault(cell.training_key(), []).append(cell)
        chunk: list = []
        for same in trainings.values():
            for i in range(0, len(same), size):
                piece = same[i:i + size]
                if len(chunk) + len(piece) > size:
                    out.append(chunk)
                    chunk = []
                chunk += piece
        out += [chunk] if chunk else []
    return out


def worker_budget(client, device: str | None) -> int | None:
    """The memory budget of a task on the cluster's smallest worker (its own device: a GPU worker's free GPU memory,
    not this machine's RAM); None if no worker answers."""
    try:
        budgets = client.run(_memory_budget, None if device in (None, "auto") else device)
    except Exception:  # noqa: BLE001 - no workers yet, or one lacks the device: sized here instead
        return None
    return min(budgets.values()) if budgets else None


def _memory_budget(device) -> int:
    """Bytes a task may use: half the free GPU memory, or a quarter of the available RAM."""
    import torch

    dev = pick_device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0] * 0.5)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return int(info.get("MemAvailable", 4 << 30) * 0.25)
    except OSError:
        return 1 << 30


def train_task(study: str, configs: list[dict], device: str | None = None, sinks=(), cancel=None,
               threads: int | None = None) -> xr.Dataset:
    """Train one task's cells as one program; returns its Dataset (dims: model, axis, ...). Runs on workers."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    cls = get_study(study)
    cells = [cls.configure(**c) for c in configs]
    ctx = Context(pick_device(device), sinks, cancel, squeeze=False)
    status, _, error = outcome(lambda: cls.execute_group(ctx, cells), ctx, f"sweep task of {study}")
    if status == "cancelled":
        raise Cancelled()  # the sweep stops; its stored parts stay
    # diverged: every model of the task did, and its cells say where (diverged_step); failed: reported, the sweep
    # goes on
    ds = to_dataset(ctx, cls.axis)
    ds.attrs["error"] = error if status == "failed" else ""
    ds.attrs["device"] = str(ctx.device)
    return ds


def train_task_remote(study: str, configs: list[dict], device: str | None, topic: str, cancel_name: str,
                      task: int) -> xr.Dataset:
    """train_task on a Dask worker: its records logged under `topic` as they come (tagged with the task), its
    cancel read from the cluster-wide event `cancel_name` (runs.remote)."""
    from distributed import get_worker

    worker = get_worker()

    def send(record: dict) -> None:
        worker.log_event(topic, {"task": task, "record": plain(record)})

    return train_task(study, configs, device, [send], RemoteCancel(cancel_name), threads=1)


def _label(ds: xr.Dataset, cells: list, grid: dict) -> xr.Dataset:
    """Attach each model's grid values and seed as coordinates along "model"."""
    coords = {name: ("model", [getattr(c, name) for c in cells]) for name in list(grid) + ["seed"]}
    if "model" not in ds.dims:
        ds = ds.expand_dims(model=len(cells))
    return ds.assign_coords(coords)


def _combine(parts: list[xr.Dataset], grid: dict, seeds: list, axis: str) -> xr.Dataset:
    """Parts (dims: model, ...) -> one Dataset with a dim per swept dial, seed, and the axis."""
    merged = xr.concat(parts, dim="model", join="outer", data_vars="all", coords="different", compat="equals",
                       combine_attrs="drop")
    keys = list(grid) + ["seed"]
    merged = merged.set_index(model=keys).unstack("model")
    order = {k: grid[k] for k in grid}
    order["seed"] = seeds
    merged = merged.reindex(order)  # the grid's own order, not sorted
    lead = [*keys, axis]
    return merged.transpose(*[d for d in lead if d in merged.dims], ...)


def _part_path(store: Store, study: str, sweep_id: str, cells: list) -> Path:
    key = hashlib.sha256(json.dumps([c.config() for c in cells], sort_keys=True).encode()).hexdigest()[:12]
    return store.root / "sweeps" / study / sweep_id / f"part-{key}.nc"


class _claim:
    """`with _claim(part) as mine:` mine is True if this sweep may train the part: a claim file beside it, made
    exclusively, removed on leaving. A claim whose process is gone (same host) or untouched for STALE_S is taken
    over."""

    def __init__(self, part: Path):
        self.path, self.token, self.mine = part.with_suffix(".claim"), uuid.uuid4().hex, False

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _stale(self.path):
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": self.token}, f)
            self.mine = True
            return True
        return False

    def __exit__(self, *exc) -> None:
        if self.mine:
            try:
                if json.loads(self.path.read_text()).get("token") == self.token:
                    self.path.unlink()
            except (OSError, ValueError):
                pass


def _stale(claim: Path) -> bool:
    """A claim left by a process that is gone (same host), or untouched for STALE_S (another host)."""
    try:
        info = json.loads(claim.read_text())
        age = time.time() - claim.stat().st_mtime
    except FileNotFoundError:
        return True
    except (OSError, ValueError):  # half-written: its writer is between open and write, or died there
        return time.time() - claim.stat().st_mtime > 60 if claim.exists() else True
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
            return False
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return age > STALE_S
    return age > STALE_S


def _client(executor: str, scheduler: str | None):
    """A Dask client: an existing scheduler (argument or DASK_SCHEDULER_ADDRESS), else a LocalCluster on loopback."""
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address:
        return client_for(address), None
    cluster = LocalCluster(n_workers=max(1, (os.cpu_count() or 2) // 1), threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


def get_preset(study: str, name: str) -> dict:
    """A study's named sweep: {"about", "grid", "seeds", "dials", "x", "y", "metric", "epoch"}."""
    presets = get_study(study).presets
    if name not in presets:
        raise ConfigError("preset", name, f"one of {', '.join(presets) or '(none for this study)'}")
    return presets[name]


def estimate(study: str, grid: dict, seeds, dials: dict, store: Store | None = None, plan_up_to: int = 200) -> dict:
    """What a sweep would cost, before it runs: its cells, whether it is stored already, and a rough duration from
    the study's stored sweeps (seconds per cell-step, their median), else its stored single runs (an upper bound:
    a sweep trains its cells stacked). {"cells", "stored", "seconds" (None: nothing to go by), "basis"}. Cheap
    enough for every keystroke: only a grid of at most `plan_up_to` cells is laid out (to look up its id)."""
    cls = get_study(study)
    steps = cls.axis + "s"
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    n = len(seeds)
    for values in grid.values():
        n *= len(values)
    per_cell = float(np.mean(grid[steps])) if steps in grid else \
        float(dials.get(steps, getattr(cls.param, steps).default if steps in cls.param else 1) or 1)
    todo = n * per_cell  # cell-steps to train
    store = store or Store()
    stored = False
    if n <= plan_up_to:
        *_, sid = plan(study, grid, seeds, dials)
        stored = store.cached(sid, statuses=("done",)) is not None
    rates, basis = [], ""
    for row in store.list(study=study, kind="sweep", status="done", limit=20):
        p, wall = row["params"], row["wall_s"]
        if not wall or not isinstance(p, dict) or "grid" not in p:
            continue
        n = int(np.prod([len(v) for v in p["grid"].values()])) * len(p.get("seeds") or [0])
        per = np.mean(p["grid"][steps]) if steps in p["grid"] else (p.get("fixed") or {}).get(steps, 1)
        rates.append(wall / max(1.0, n * float(per or 1)))
    if rates:
        basis = f"{len(rates)} stored sweep{'s' * (len(rates) != 1)} of this study"
    else:
        for row in store.list(study=study, kind="run", status="done", limit=20):
            if row["wall_s"]:
                rates.append(row["wall_s"] / max(1.0, float(row["params"].get(steps, 1) or 1)))
        if rates:
            basis = f"{len(rates)} stored run{'s' * (len(rates) != 1)} of this study, one at a time: an upper bound"
    seconds = float(np.median(rates)) * todo if rates and not stored else (0.0 if stored else None)
    return {"cells": n, "stored": stored, "seconds": seconds, "basis": basis}


def sweep(study: str, grid: dict | None = None, seeds: Iterable[int] | None = None, *, preset: str | None = None,
          force: bool = False, device: str | None = None,
          executor: str | None = None, scheduler: str | None = None, client=None, progress: bool = True,
          store: Store | None = None, sinks: Iterable[Callable] = (), cancel: threading.Event | None = None,
          tags: Iterable[str] = (), owner: str = "", **dials) -> Sweep:
    """Train every cell of grid × seeds (the other dials fixed as given) and return a Sweep.

    executor: "local" (this process) or "dask" (a LocalCluster, or `scheduler` / DASK_SCHEDULER_ADDRESS, or a
    given `client`); by default "dask" when $DASK_SCHEDULER_ADDRESS is set. `preset` names one of the study's presets (grid, seeds and dials; arguments given here win).
    Sinks receive engine.events.TaskStarted and .Recorded (with its task) while a local task trains, and
    .PartStored when any task is stored. A killed sweep resumes: stored tasks are read back.
    """
    if preset is not None:
        p = get_preset(study, preset)
        grid = grid if grid is not None else p["grid"]
        seeds = seeds if seeds is not None else p["seeds"]
        dials = {**p["dials"], **dials}
    if grid is None:
        raise ConfigError("grid", None, "a dict of at least one dial -> list of values (or a preset)")
    seeds = [0] if seeds is None else seeds
    executor = pick_executor(executor, scheduler, client)
    cls, cells, config, sid = plan(study, grid, seeds, dials)
    dev = pick_device(device)
    tags = check_tags(tags)
    store = store or Store()
    if not force:
        meta = store.cached(sid, statuses=("done",))
        if meta:
            return Sweep(meta, store=store)
    own = None
    if executor == "dask" and client is None:
        client, own = _client(executor, scheduler)
    # task sizes from the memory of the device that trains them: the smallest worker's, on Dask
    jobs = tasks(cls, cells, dev, budget=worker_budget(client, device) if executor == "dask" else None)
    paths = [_part_path(store, study, sid, job) for job in jobs]
    store.clear_temp()  # torn writes of killed writers (stale ones only: a concurrent sweep's are live)
    if force:
        for p in paths:
            p.unlink(missing_ok=True)
    sinks = list(sinks)
    cancel = cancel or threading.Event()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), unit="cell", desc=f"sweep {study}", dynamic_ncols=True)
    parts: dict[int, xr.Dataset] = {}
    errors: list[str] = []
    t0 = time.perf_counter()
    created = now()

    def finish(j: int, ds: xr.Dataset, write: bool = True) -> None:
        if ds.attrs.get("error"):
            errors.append(ds.attrs["error"])
        elif write:
            write_atomic(ds, paths[j])
        parts[j] = ds
        if bar is not None:
            bar.update(len(jobs[j]))
        for sink in sinks:
            sink(PartStored(j, ds))

    def stored(j: int) -> bool:
        """Part j is on disk (resumed, or trained by a concurrent sweep): read it instead of training it."""
        if j not in parts and paths[j].is_file():
            try:
                finish(j, xr.load_dataset(paths[j], engine="h5netcdf"), write=False)
            except FileNotFoundError:  # removed by the sweep that finished it: it is stored whole instead
                return False
        return j in parts

    def train_here(j: int) -> None:
        cells_j = [{k: getattr(c, k) for k in [*config["grid"], "seed"]} for c in jobs[j]]
        for sink in sinks:
            sink(TaskStarted(j, cells_j))
        task_sinks = [lambda rec, j=j: [s(Recorded(rec, j)) for s in sinks]] if sinks else []
        ds = train_task(study, [c.config() for c in jobs[j]], str(dev), task_sinks, cancel)
        finish(j, _label(ds, jobs[j], config["grid"]))

    def share(todo: list[int]) -> xr.Dataset | None:
        """Train the parts no one else is training (a claim file per part), read the ones a concurrent sweep of
        the same grid trains as they land; None, or the whole sweep if that one stored it meanwhile."""
        pending = [j for j in todo if not stored(j)]
        while pending:
            moved = False
            for j in list(pending):
                if cancel.is_set():
                    raise Cancelled()
                if stored(j):
                    pending.remove(j)
                    moved = True
                    continue
                with _claim(paths[j]) as mine:
                    if not mine:
                        continue
                    if not stored(j):
                        done = None if force else store.cached(sid, statuses=("done",))  # parts gone: folded
                        if done:  # into a sweep stored meanwhile
                            return done
                        train_here(j)
                pending.remove(j)
                moved = True
            if pending and not moved:  # every one left is being trained elsewhere
                done = None if force else store.cached(sid, statuses=("done",))
                if done:
                    return done
                time.sleep(0.5)
        return None

    for j in range(len(jobs)):  # resume
        stored(j)
    todo = [j for j in range(len(jobs)) if j not in parts]
    status = "done"
    try:
        if executor == "local" or not todo:
            other = share(todo)
            if other is not None:  # a concurrent sweep of the same grid stored it whole meanwhile
                return Sweep(other, store=store)
        else:
            from contextlib import ExitStack

            last: dict[int, int] = {}

            def on_record(j: int, rec: dict) -> None:  # a task's records as they arrive, each step once
                step = rec.get("step", rec.get(cls.axis))
                if j in last and step is not None and step <= last[j]:
                    return  # a retried task (its worker died) repeating steps already passed on
                if j not in last:
                    cells_j = [{k: getattr(c, k) for k in [*config["grid"], "seed"]} for c in jobs[j]]
                    for sink in sinks:
                        sink(TaskStarted(j, cells_j))
                last[j] = step if step is not None else last.get(j, -1)
                for sink in sinks:
                    sink(Recorded(rec, j))

            lost = False
            with ExitStack() as claims, Follow(client, on_record if sinks else lambda j, r: None) as follow:
                mine = [j for j in todo if claims.enter_context(_claim(paths[j]))]
                needs = gpu_resources(client, device)
                futures = {client.submit(train_task_remote, study, [c.config() for c in jobs[j]], device,
                                         follow.topic, follow.cancel_name, j, pure=False, resources=needs): j
                           for j in mine}

                def done(fut) -> None:
                    j = futures[fut]
                    finish(j, _label(fut.result(), jobs[j], config["grid"]))  # Cancelled: the sweep stops

                try:
                    follow.wait(list(futures), cancel, done)
                except SchedulerLost as e:  # the parts stored so far stay; the sweep is failed, with why
                    errors.append(str(e))
                    lost = True
                except Cancelled:
                    follow.cancel_tasks()  # the others stop at their next step too
                    raise
            if not lost:
                other = share([j for j in todo if j not in parts])  # those a concurrent sweep had claimed
                if other is not None:
                    return Sweep(other, store=store)
    except (Cancelled, KeyboardInterrupt):
        status = "cancelled"
    finally:
        if bar is not None:
            bar.close()
        if own is not None:  # a LocalCluster of this sweep's own
            client.close()
            own.close()
    if errors and status == "done":
        status = "failed"
    ok = [parts[j] for j in sorted(parts) if not parts[j].attrs.get("error")]
    ds = _combine(ok, config["grid"], config["seeds"], cls.axis) if ok else xr.Dataset()
    meta = record(sid, study, "sweep", config, sweep_identity(cells), status, None,
                  "; ".join(sorted(set(errors))) or None, created, t0, dev, tags, ds, owner)
    saved = store.save(meta, ds)  # a cancelled or failed rerun beside a finished sweep: kept as an attempt
    if status == "done":
        for p in paths:
            p.unlink(missing_ok=True)
        try:
            paths[0].parent.rmdir()
        except OSError:
            pass
    return Sweep(saved, ds=ds, store=store)
