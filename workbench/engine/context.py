"""What a study's run function talks to: emit records, keep arrays, notice cancellation, pick the device."""
from __future__ import annotations

import threading
from typing import Callable

import torch

from ..errors import Cancelled

Record = dict  # {axis: int, "step": int, metric: float, ...}: one shape for every study, read by every sink


def pick_device(device: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU; or the one asked for."""
    if device and device != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            from ..errors import ConfigError

            raise ConfigError("device", device, "auto, cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            from ..errors import ConfigError

            raise ConfigError("device", device, "a device this machine has (no CUDA here)")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Context:
    """Handed to Study.execute. Records go to `records` and to every sink as they are emitted."""

    def __init__(self, device: torch.device, sinks: list[Callable[[Record], None]] | tuple = (),
                 cancel: threading.Event | None = None, total: int | None = None):
        self.device = device
        self.sinks = list(sinks)
        self.cancel = cancel or threading.Event()
        self.total = total  # number of records expected (for progress bars)
        self.records: list[Record] = []
        self.arrays: dict = {}  # name -> (dims, values[, attrs]) for xarray
        self.coords: dict = {}
        self.last_step = 0

    def emit(self, record: Record) -> None:
        self.records.append(record)
        self.last_step = int(record.get("step", self.last_step))
        for sink in self.sinks:
            sink(record)

    def put(self, name: str, dims: tuple, values, **coords) -> None:
        """Keep a non-scalar result (per-example losses, spectra, ...) for the run's dataset."""
        self.arrays[name] = (dims, values)
        self.coords.update(coords)

    def check(self) -> None:
        """Raise Cancelled if the run was asked to stop."""
        if self.cancel.is_set():
            raise Cancelled()
