"""A Dask cluster on this machine from Dask's own command-line programs (`dask scheduler`, `dask worker`), bound to
127.0.0.1, for trying the cluster back end (`workbench cluster`, `workbench serve --dask`) and for the tests.

GPU-aware: with CUDA devices, one worker per device (CUDA_VISIBLE_DEVICES set to it, one thread, the resource
GPU=1 that GPU tasks ask for), so a GPU machine is never given one worker per CPU core; without, `workers` CPU
workers of one task each, whose torch threads share the cores between them.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ..errors import ConfigError, require


class SchedulerExited(RuntimeError):
    """The Dask scheduler process ended before it listened."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch CUDA: CPU workers
        return 0


class LocalProcesses:
    """A scheduler and workers as processes of this machine (no nannies: a worker is one process, its PID is the
    worker's); stopped (by PID) on exit or stop()."""

    def __init__(self, workers: int | None = None, port: int | None = 0, dashboard_port: int | None = None,
                 gpus: int | None = None, timeout: float = 120):
        if workers is not None and not 1 <= workers <= 256:
            raise ConfigError("workers", workers, "from 1 to 256")
        require("distributed", "dask", "cluster", "dask")
        self.gpus = gpu_count() if gpus is None else gpus
        self.n = workers or (self.gpus or 2)
        self._chosen = port is None  # a port picked here may be taken before the scheduler binds it: then another
        self.port = port or _free_port()
        self.dashboard_port = dashboard_port
        self.timeout = timeout
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def describe(self) -> str:
        kind = "GPU worker (GPU=1)" if self.gpus else "CPU worker"
        return f"{self.n} {kind}{'s' * (self.n != 1)}"

    def start(self) -> "LocalProcesses":
        try:
            for attempt in range(3):
                self._start_scheduler()
                try:
                    self._wait_for_port()
                    break
                except SchedulerExited:
                    if not self._chosen or attempt == 2:
                        raise
                    self.port = _free_port()  # another process took the free port first: pick again
                    self.address = f"tcp://127.0.0.1:{self.port}"
            for i in range(self.n):
                self.add_worker(i)
            self.wait_for_workers(self.n)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_scheduler(self) -> None:
        dash = f"127.0.0.1:{self.dashboard_port}" if self.dashboard_port else ":0"
        self._log = tempfile.TemporaryFile()  # what it said, for the error if it exits at once
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--dashboard-address", dash], stdout=subprocess.DEVNULL, stderr=self._log)

    def add_worker(self, i: int | None = None) -> subprocess.Popen:
        """Start one more worker (the i-th GPU's, on a GPU machine)."""
        i = len(self.workers) if i is None else i
        env = dict(os.environ)
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1",
               "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"workbench-{i}"]
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % self.gpus)
            cmd += ["--resources", "GPU=1"]
        else:  # the cores shared among the workers' torch threads
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // self.n)))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(proc)
        return proc

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                self._log.seek(0)
                said = self._log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise SchedulerExited(f"the Dask scheduler exited at once (code {self.scheduler.returncode}); is "
                                      f"port {self.port} free? It said: {' | '.join(said) or 'nothing'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the Dask scheduler did not listen on {self.address} within {self.timeout:g} s")

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(n, timeout=self.timeout)

    def wait(self) -> None:
        """Block while the scheduler runs."""
        self.scheduler.wait()

    def stop(self) -> None:
        from .remote import close_clients

        close_clients(self.address)  # this process's clients of it would try to reconnect
        procs = [*self.workers, *([self.scheduler] if self.scheduler else [])]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> "LocalProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
