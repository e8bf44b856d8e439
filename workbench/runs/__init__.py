"""Runs, the store (netCDF files + SQLite catalog)."""
from .run import Run, load, run, run_id, summarize
from .store import Store, default_root
from .sweep import Sweep, sweep

__all__ = ["Run", "Store", "Sweep", "sweep", "default_root", "load", "run", "run_id", "summarize"]
