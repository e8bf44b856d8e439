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
    """Handed to Study.execute_group. Records go to `records` and to every sink as they are emitted.

    Studies emit per-model values ((K,) arrays) and put arrays with a leading "model" dim. With squeeze=True (a
    single run) the model axis is dropped, so a run's records hold plain floats.
    """

    def __init__(self, device: torch.device, sinks: list[Callable[[Record], None]] | tuple = (),
                 cancel: threading.Event | None = None, total: int | None = None, squeeze: bool = True):
        self.device = device
        self.squeeze = squeeze
        self.sinks = list(sinks)
        self.cancel = cancel or threading.Event()
        self.total = total  # number of records expected (for progress bars)
        self.records: list[Record] = []
        self.arrays: dict = {}  # name -> (dims, values[, attrs]) for xarray
        self.coords: dict = {}
        self.last_step = 0

    def emit(self, record: Record) -> None:
        if self.squeeze:
            record = {k: _scalar(v) for k, v in record.items()}
        self.records.append(record)
        self.last_step = int(record.get("step", self.last_step))
        for sink in self.sinks:
            sink(record)

    def put(self, name: str, dims: tuple, values, **coords) -> None:
        """Keep a non-scalar result (per-example losses, spectra, ...) for the run's dataset."""
        if self.squeeze and dims and dims[0] == "model":
            dims, values = dims[1:], values[0]
        self.arrays[name] = (dims, values)
        self.coords.update(coords)

    def check(self) -> None:
        """Raise Cancelled if the run was asked to stop."""
        if self.cancel.is_set():
            raise Cancelled()


def _scalar(v):
    """A length-1 per-model value as a plain number."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if hasattr(v, "__len__") and len(v) == 1:
        v = v[0]
    return v.item() if hasattr(v, "item") else v
