"""Scalar metrics of a classifier's outputs."""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of argmax predictions equal to y (nan for an empty set)."""
    if len(y) == 0:
        return float("nan")
    return (logits.argmax(dim=1) == y).float().mean().item()


def ece(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): Σ_b |B_b|/n · |acc(B_b) - conf(B_b)| over equal-width bins."""
    if len(y) == 0:
        return float("nan")
    conf, pred = torch.softmax(logits.float(), dim=1).max(dim=1)
    correct = (pred == y).float()
    # bin b holds conf in (b/bins, (b+1)/bins]
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    n = torch.bincount(idx, minlength=bins).float()
    gap = (torch.bincount(idx, weights=correct, minlength=bins) - torch.bincount(idx, weights=conf, minlength=bins)).abs()
    return (gap.sum() / len(y)).item() if n.sum() > 0 else float("nan")

