"""Training: a plain loop a reader can follow, emitting one record shape per epoch."""
from .context import Context, Record, pick_device

__all__ = ["Context", "Record", "pick_device"]
