"""The noise math: small pure functions, each with its paper and formula."""
from . import labels

__all__ = ["labels"]
