"""Label noise: transition matrices T[i, j] = P(noisy = j | true = i) and sampling from them.

Symmetric noise at rate r changes a fraction r of labels, each to one of the *other* K-1 classes
uniformly (so the empirical changed fraction is r, not r(K-1)/K), as in Patrini et al. 2017 and
Liu et al. 2020 ("Early-Learning Regularization Prevents Memorization of Noisy Labels").
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

KINDS = ("symmetric", "pair", "matrix")


def symmetric(num_classes: int, rate: float) -> torch.Tensor:
    """Symmetric flips: T = (1 - r) I + r / (K - 1) (11ᵀ - I)."""
    k = num_classes
    off = torch.full((k, k), rate / (k - 1), dtype=torch.float64)
    return off.fill_diagonal_(1.0 - rate)


def pair(num_classes: int, rate: float) -> torch.Tensor:
    """Pair flips (Han et al. 2018, Co-teaching): class k goes to k + 1 mod K with probability r."""
    k = num_classes
    t = torch.eye(k, dtype=torch.float64) * (1.0 - rate)
    t[torch.arange(k), (torch.arange(k) + 1) % k] = rate
    return t


def check_matrix(matrix, num_classes: int, field: str = "transition_matrix") -> torch.Tensor:
    """Validate a user transition matrix: K×K, entries in [0, 1], rows summing to 1 (row = true class)."""
    try:
        t = torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(field, matrix, f"a {num_classes}x{num_classes} matrix of numbers") from None
    if t.shape != (num_classes, num_classes):
        raise ConfigError(field, matrix, f"a {num_classes}x{num_classes} matrix (got shape {tuple(t.shape)})")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ConfigError(field, matrix, "entries in [0, 1]")
    sums = t.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        bad = int(torch.argmax((sums - 1).abs()))
        raise ConfigError(field, matrix, f"rows summing to 1 (row {bad} sums to {float(sums[bad]):.6g})")
    return t


def transition_matrix(kind: str, num_classes: int, rate: float = 0.0, matrix=None) -> torch.Tensor:
    """T[i, j] = P(noisy = j | true = i), row-stochastic, float64. kind: symmetric | pair | matrix."""
    if kind not in KINDS:
        raise ConfigError("noise_kind", kind, f"one of {', '.join(KINDS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError("num_classes", num_classes, "an integer >= 2")
    if kind == "matrix":
        if matrix is None:
            raise ConfigError("transition_matrix", None, "a KxK row-stochastic matrix when noise_kind='matrix'")
        return check_matrix(matrix, num_classes)
    if not 0.0 <= float(rate) <= 1.0:
        raise ConfigError("flip_rate", rate, "a number in [0, 1]")
    return symmetric(num_classes, float(rate)) if kind == "symmetric" else pair(num_classes, float(rate))


def flip(y: torch.Tensor, T: torch.Tensor, generator: torch.Generator | None = None):
    """Draw ỹ_n ~ Categorical(T[y_n]) for each label. Returns (y_noisy, flipped) with flipped = ỹ != y."""
    y = torch.as_tensor(y, dtype=torch.long)
    T = torch.as_tensor(T, dtype=torch.float64)
    if y.numel() == 0:
        return y.clone(), torch.zeros_like(y, dtype=torch.bool)
    if int(y.min()) < 0 or int(y.max()) >= T.shape[0]:
        raise ConfigError("y", f"labels in [{int(y.min())}, {int(y.max())}]", f"labels in [0, {T.shape[0] - 1}]")
    rows = T[y.cpu()]  # (n, K)
    y_noisy = torch.multinomial(rows, 1, generator=generator).squeeze(1).to(y.device)
    return y_noisy, y_noisy != y
