"""Runs on a Dask cluster: one run is one Dask task, trained on a worker, its records sent back while it trains,
stoppable from the client, and stored by the client alone (the task returns its result; workers never write the
store).

Live records travel on Dask's event log: the task logs each record under a topic of its own
(`Worker.log_event`, a batched, non-blocking send: the training step never waits on the network), and the client
subscribes to that topic (`Client.subscribe_topic`: pushed to it, no polling, in order). A `distributed.Queue`
would cost a round trip to the scheduler per record; pub/sub would need a worker address known in advance.

Cancel is a cluster-wide `distributed.Event` named after the job: the client sets it, the task reads it at most
every POLL_S seconds (a step checks it every time; the scheduler is asked only that often) and stops at its next
step, returning what it computed as `cancelled`.

A worker that dies mid-task: the scheduler gives the task to another worker (the task is pure training from its
config, so it starts over there); the records of the lost attempt are not repeated to the client's sinks (a record
is passed on only once its step is past the last one passed on). A lost scheduler: the run ends `failed`, with the
reason.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Callable

import numpy as np

from ..errors import ConfigError, require

log = logging.getLogger("workbench")

POLL_S = 0.5  # how often a task asks the scheduler whether it was cancelled
LOST_S = float(os.environ.get("WORKBENCH_SCHEDULER_LOST_S", "20"))  # a client cut off this long: the run failed
CONNECT_S = 30  # how long a new client tries to reach its scheduler
TOPIC = "workbench-records-"

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The scheduler runs go to: the argument, else $DASK_SCHEDULER_ADDRESS; None: run here."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is not None and "://" not in address and ":" not in address:
        raise ConfigError("scheduler", address, "a Dask scheduler address such as tcp://10.0.0.5:8786")
    return address


def pick_executor(executor: str | None, scheduler: str | None, client) -> str:
    """"local" or "dask": as asked, else "dask" when a client or a scheduler address (argument or
    $DASK_SCHEDULER_ADDRESS) is at hand."""
    executor = executor or ("dask" if client is not None or scheduler_address(scheduler) else "local")
    if executor not in ("local", "dask"):
        raise ConfigError("executor", executor, "local or dask")
    if executor == "dask":
        require("distributed", "dask", "executor", "dask")
    return executor


def remote_device(device: str) -> str:
    """A device name for a worker: its form is checked here, whether the worker has it there."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError("device", device, "auto, cpu, cuda, cuda:N or mps")
    return device


def gpu_resources(client, device: str | None) -> dict | None:
    """What a task asked to run on CUDA needs of a worker: one GPU (workers offer GPU=1 each: cluster.py). A
    cluster none of whose workers offers one is refused here, rather than leaving the task waiting for ever."""
    if not (device and str(device).startswith("cuda")):
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if not any(w.get("resources", {}).get("GPU") for w in workers):
        raise ConfigError("device", device, "a device the cluster's workers offer: none has the resource GPU=1 "
                                            "(start them with --resources GPU=1, or workbench cluster on a GPU "
                                            "machine), else auto or cpu")
    return {"GPU": 1}


def client_for(address: str):
    """One Dask client per scheduler address in this process, made on first use and kept (a client costs a
    second to connect: not once per run)."""
    require("distributed", "dask", "scheduler", address)
    from distributed import Client

    with _clients_lock:
        client = _clients.get(address)
        if client is None or client.status in ("closed", "closing"):
            try:
                client = Client(address, timeout=f"{CONNECT_S}s", set_as_default=False)
            except OSError as e:
                raise ConfigError("scheduler", address, f"a reachable Dask scheduler ({e})") from None
            _clients[address] = client
        return client


def close_clients(address: str | None = None) -> None:
    """Close the kept clients (of one scheduler, or all): before a scheduler is stopped, else they try to
    reconnect to it."""
    with _clients_lock:
        for key in [address] if address else list(_clients):
            client = _clients.pop(key, None)
            try:
                if client is not None:
                    client.close()
            except Exception:  # noqa: BLE001 - closing a client of a scheduler that is gone
                pass


def plain(value):
    """A record's values as msgpack can carry them: numbers, strings, lists, dicts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy().tolist()
    return value


class RemoteCancel:
    """On the worker: whether the client cancelled this task (a distributed.Event, asked every POLL_S at most).
    Looks like the threading.Event a local run gets."""

    def __init__(self, name: str):
        self.name = name
        self._set = False
        self._asked = 0.0

    def is_set(self) -> bool:
        if not self._set and time.monotonic() - self._asked >= POLL_S:
            self._asked = time.monotonic()
            try:
                from distributed import Event

                self._set = Event(self.name).is_set()
            except Exception:  # noqa: BLE001 - the scheduler briefly unreachable: train on, ask again later
                pass
        return self._set

    def set(self) -> None:
        self._set = True


def train_remote(study: str, config: dict, device: str | None, ident: dict, topic: str, cancel_name: str) -> dict:
    """The task: train one run on this worker and return its result for the client to store. The worker's code and
    data must be what the client's run id says (else the run fails, saying so: a result stored under an id must
    have been computed by that id's code)."""
    from distributed import get_worker

    from ..engine import pick_device
    from ..studies import get as get_study
    from .identity import identity
    from .run import execute

    cls = get_study(study)
    cfg = cls.configure(**config)
    here = identity(cfg)
    if here != ident:
        what = "code" if here["code"] != ident["code"] else "data files"
        raise RuntimeError(f"this worker's {what} differ from the client's ({here} against {ident}): install the "
                           "same workbench (and data) on the workers")
    worker = get_worker()
    attempt = uuid.uuid4().hex[:8]

    def send(record: dict) -> None:
        worker.log_event(topic, {"attempt": attempt, "record": plain(record)})

    status, step, error, ds, dev = execute(cls, cfg, pick_device(device), [send], RemoteCancel(cancel_name), (),
                                           f"run of {study} on {worker.address}")
    return {"status": status, "step": step, "error": error, "ds": ds, "device": dev, "worker": worker.address}


class SchedulerLost(RuntimeError):
    """The client lost its scheduler for longer than LOST_S."""


class Follow:
    """On the client, around tasks submitted with `topic` and `cancel_name`: their records reach `on_record` (task
    tag, record) as they arrive, and `wait` mirrors `cancel` to them and notices a lost scheduler."""

    def __init__(self, client, on_record: Callable[[object, dict], None]):
        key = uuid.uuid4().hex[:12]
        self.client, self.key = client, key
        self.topic, self.cancel_name = TOPIC + key, "workbench-cancel-" + key
        self._on_record = on_record
        self._cancelled = False

    def _event(self, event) -> None:  # on the client's event loop
        msg = event[1]
        try:
            self._on_record(msg.get("task"), msg["record"])
        except Exception:  # noqa: BLE001 - a sink's failure must not stop the others or the run
            log.exception("a record sink failed")

    def __enter__(self) -> "Follow":
        self.client.subscribe_topic(self.topic, self._event)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # noqa: BLE001 - a client cut off from its scheduler
            pass

    def cancel_tasks(self) -> None:
        from distributed import Event

        if not self._cancelled:
            try:
                Event(self.cancel_name, client=self.client).set()
                self._cancelled = True
            except Exception:  # noqa: BLE001 - scheduler unreachable: wait() decides whether it is lost
                pass

    def wait(self, futures: list, cancel: threading.Event, on_done: Callable | None = None) -> None:
        """Until every future has finished (on_done(future) as each does), setting the tasks' cancel when `cancel`
        is set. Raises SchedulerLost after LOST_S without a connection."""
        pending, cut_off = list(futures), None
        while pending:
            if cancel.is_set():
                self.cancel_tasks()
            if self.client.status != "running":
                cut_off = cut_off or time.monotonic()
                if time.monotonic() - cut_off > LOST_S:
                    for f in pending:
                        f.release()
                    raise SchedulerLost(f"lost the Dask scheduler at {self.client.scheduler.address} "
                                        f"(no connection for {LOST_S:g} s)")
            else:
                cut_off = None
            for f in [f for f in pending if f.done()]:
                pending.remove(f)
                if on_done is not None:
                    on_done(f)
            time.sleep(0.1)

    def lost(self, e: BaseException) -> str:
        """What a task's failure says: its error, or that the scheduler was lost."""
        if isinstance(e, SchedulerLost):
            return str(e)
        if self.client.status == "running":
            return f"{type(e).__name__}: {e}"
        return f"lost the Dask scheduler at {self.client.scheduler.address} ({type(e).__name__})"


def run_remote(client, study: str, config: dict, device: str | None, ident: dict, axis: str,
               sinks: list[Callable], cancel: threading.Event) -> dict:
    """On the client: submit the task, pass its records to `sinks` as they arrive, mirror `cancel` to the task, and
    wait. Returns train_remote's dict; a lost scheduler or a task that could not run: status "failed" with why."""
    last, lock = [None], threading.Lock()

    def hand_on(_task, record: dict) -> None:  # each step once, in order
        with lock:
            step = record.get(axis)
            if step is not None and last[0] is not None and step <= last[0]:
                return  # a retried attempt repeating steps already shown, or a late copy of one
            last[0] = step
            for sink in sinks:
                sink(record)

    with Follow(client, hand_on) as follow:
        future = client.submit(train_remote, study, config, device, ident, follow.topic, follow.cancel_name,
                               key=f"run-{study}-{follow.key}", pure=False, resources=gpu_resources(client, device))
        try:
            follow.wait([future], cancel)
            out = future.result()
        except Exception as e:  # noqa: BLE001 - the task failed on its worker, or the cluster lost it
            return _failed(follow.lost(e))
        for record in records_of(out["ds"], axis):  # those still on their way when the result came: from it
            hand_on(None, record)
        return out


def records_of(ds, axis: str) -> list[dict]:
    """A run's records back from its dataset (the variables along the axis alone)."""
    if axis not in ds.coords:
        return []
    names = [k for k, v in ds.data_vars.items() if v.dims == (axis,)]
    columns = {k: ds[k].values for k in names}
    return [{axis: int(step), **{k: columns[k][i].item() for k in names}}
            for i, step in enumerate(ds[axis].values)]


def _failed(reason: str) -> dict:
    import xarray as xr

    return {"status": "failed", "step": None, "error": reason, "ds": xr.Dataset(), "device": "", "worker": ""}
