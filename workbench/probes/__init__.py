"""Measurements taken during or after training."""
from . import metrics

__all__ = ["metrics"]
