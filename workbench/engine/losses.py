"""Training losses for noisy labels, batched over models.

Shapes: logits (K, B, C), labels y (K, B), index (K, B) = the examples' positions in the training set (for losses
that keep per-example state). Each loss returns the per-model mean over the batch, shape (K,). Per-model
hyper-parameters are (K,) tensors or scalars.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAMES = ("ce", "gce", "elr")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example CE, any leading shape: -log softmax(z)_y."""
    return -F.log_softmax(logits, dim=-1).gather(-1, y[..., None]).squeeze(-1)


def gce(logits: torch.Tensor, y: torch.Tensor, q=0.7) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018), per example: L_q = (1 - p_y^q) / q; q -> 0 is CE, q = 1 is MAE."""
    p_y = F.softmax(logits, dim=-1).gather(-1, y[..., None]).squeeze(-1).clamp_min(1e-12)
    return (1.0 - p_y.pow(q)) / q


class ELR:
    """Early-Learning Regularization (Liu et al. 2020): t_i <- β t_i + (1-β) p_i;  L = CE + λ · mean log(1 - <t_i, p_i>).

    The targets t (K, n, C) are a running average of each model's own (detached) predictions per training example.
    """

    def __init__(self, num_models: int, num_examples: int, num_classes: int, lam=3.0, beta=0.7, device="cpu"):
        self.lam = torch.as_tensor(lam, dtype=torch.float32, device=device).reshape(-1)  # (K,) or (1,)
        self.beta = torch.as_tensor(beta, dtype=torch.float32, device=device).reshape(-1, 1, 1)
        self.targets = torch.zeros(num_models, num_examples, num_classes, device=device)

    def __call__(self, logits, y, index):
        p = F.softmax(logits, dim=-1).clamp(1e-4, 1.0 - 1e-4)  # (K, B, C)
        rows = torch.arange(len(index), device=index.device)[:, None]
        with torch.no_grad():
            p_n = p / p.sum(dim=-1, keepdim=True)
            self.targets[rows, index] = self.beta * self.targets[rows, index] + (1 - self.beta) * p_n
        reg = torch.log(1.0 - (self.targets[rows, index] * p).sum(dim=-1))  # (K, B)
        return cross_entropy(logits, y).mean(1) + self.lam * reg.mean(1)


def make(name: str, *, num_models: int = 1, num_examples: int, num_classes: int, q=0.7, lam=3.0, beta=0.7,
         device="cpu"):
    """A batch loss `loss(logits, y, index) -> (K,)` per-model means."""
    if name == "ce":
        return lambda logits, y, index: cross_entropy(logits, y).mean(-1)
    if name == "gce":
        q_ = torch.as_tensor(q, dtype=torch.float32, device=device).reshape(-1, 1)
        return lambda logits, y, index: gce(logits, y, q_).mean(-1)
    if name == "elr":
        return ELR(num_models, num_examples, num_classes, lam, beta, device)
    raise ValueError(f"unknown loss {name!r}")
