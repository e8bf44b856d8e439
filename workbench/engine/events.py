"""What a running job tells whoever follows it: small typed records, one class per kind, never tuples decoded by
position. Runs and sweeps produce them (through their sinks), the job queue keeps them in order, pages and scripts
read them back with `isinstance`. (They live beside the Context that makes ArrayKept and Preview.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One record of a run (or of sweep task `task`): {axis: int, "step": int, metric: value, ...}; in a sweep
    task each metric holds one value per cell of the task."""

    record: dict
    task: int | None = None


@dataclass(frozen=True)
class _Array:
    name: str
    dims: tuple
    values: Any
    coords: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ArrayKept(_Array):
    """An array the run keeps in its dataset (spectra snapshots, per-example losses, samples), as it is kept."""


@dataclass(frozen=True)
class Preview(_Array):
    """A passing array the run shows and does not keep (samples part-way through sampling)."""


@dataclass(frozen=True)
class TaskStarted:
    """A sweep task began: its cells' grid values and seeds, in the order of the task's models."""

    task: int
    cells: list


@dataclass(frozen=True)
class PartStored:
    """A sweep task's results were stored (or read back on resume): its dataset, dims model × ...."""

    task: int
    dataset: Any


Event = Recorded | ArrayKept | Preview | TaskStarted | PartStored
