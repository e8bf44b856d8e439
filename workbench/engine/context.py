"""What a study's run function talks to: emit records, keep arrays, notice cancellation, pick the device."""
from __future__ import annotations

import threading
from typing import Callable

import torch

from ..errors import Cancelled
from .events import ArrayKept, Preview

Record = dict  # {axis: int, "step": int, metric: float, ...}: one shape for every study, read by every sink


def pick_device(device: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU; or the one asked for, which must exist here (refused before any work)."""
    from ..errors import ConfigError

    if device and device != "auto":
        allowed = "auto, cpu, cuda, cuda:N or mps"
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError("device", device, allowed) from None
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise ConfigError("device", device, "a device this machine has (no CUDA here: auto or cpu)")
            if dev.index is not None and dev.index >= n:
                raise ConfigError("device", device, f"a device this machine has (cuda:0 to cuda:{n - 1})")
        elif dev.type == "mps":
            if not _mps_available():
                raise ConfigError("device", device, "a device this machine has (no MPS here: auto or cpu)")
        elif dev.type != "cpu":
            raise ConfigError("device", device, allowed)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


class Context:
    """Handed to Study.execute_group. Records go to `records` and to every sink as they are emitted.

    Studies emit per-model values ((K,) arrays) and put arrays with a leading "model" dim. With squeeze=True (a
    single run) the model axis is dropped, so a run's records hold plain floats.
    """

    def __init__(self, device: torch.device, sinks: list[Callable[[Record], None]] | tuple = (),
                 cancel: threading.Event | None = None, total: int | None = None, squeeze: bool = True,
                 array_sinks: list[Callable] | tuple = ()):
        self.device = device
        self.squeeze = squeeze
        self.sinks = list(sinks)
        self.array_sinks = list(array_sinks)  # called with an ArrayKept on every put, a Preview on every preview
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
        if self.array_sinks:
            event = ArrayKept(name, dims, values, coords)
            for sink in self.array_sinks:
                sink(event)

    def preview(self, name: str, dims: tuple, values, **coords) -> None:
        """Show a passing array (samples part-way through sampling, ...) to the array sinks without keeping it."""
        if self.array_sinks:
            event = Preview(name, dims, values, coords)
            for sink in self.array_sinks:
                sink(event)

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


class DivergenceLog:
    """Which of K models went non-finite, at which step and in which tensor; kept in the run's dataset as
    diverged_step (-1: never) and diverged_tensor ("" : never). A diverged model is a result: the others go on."""

    def __init__(self, ctx: Context, k: int):
        import numpy as np

        self.ctx = ctx
        self.step = np.full(k, -1, dtype=np.int64)
        self.tensor = np.full(k, "", dtype="<U16")
        self._put()

    def _put(self) -> None:
        self.ctx.put("diverged_step", ("model",), self.step.copy())
        self.ctx.put("diverged_tensor", ("model",), self.tensor.copy())
        self.ctx.put("diverged", ("model",), (self.step >= 0).astype(float))  # averaged over seeds: a fraction

    def update(self, step: int, bad, where: str) -> None:
        """bad: (K,) bool, models found non-finite at `step` in tensor `where`. Raises Diverged when all have."""
        import numpy as np

        from ..errors import Diverged

        bad = np.asarray(bad.cpu() if isinstance(bad, torch.Tensor) else bad, dtype=bool)
        new = bad & (self.step < 0)
        if new.any():
            self.step[new], self.tensor[new] = step, where
            self._put()
        if (self.step >= 0).all():
            raise Diverged(int(self.step.max()), where)

    def check_step(self, step: int, per_model_loss: torch.Tensor, net) -> None:
        """After a training step: a non-finite loss (the forward pass), else non-finite gradients (precision)."""
        loss_bad = ~torch.isfinite(per_model_loss)
        prec = getattr(net, "precision", None)
        grad_bad = ~prec.grad_finite if prec is not None and prec.grad_finite is not None else None
        if loss_bad.any():
            self.update(step, loss_bad, "loss")
        if grad_bad is not None and grad_bad.any():
            self.update(step, grad_bad, "gradients")
