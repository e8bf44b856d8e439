"""The noise math: small pure functions, each with its paper and formula."""
from . import formats, labels, schedules

__all__ = ["formats", "labels", "schedules"]
