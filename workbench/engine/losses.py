"""Training losses for noisy labels. Each returns the mean loss of a batch; `index` is the examples' position in
the training set (used by losses that keep per-example state)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAMES = ("ce", "gce", "elr")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example CE: -log softmax(z)_y."""
    return F.cross_entropy(logits, y, reduction="none")


def gce(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018): L_q = (1 - p_y^q) / q; q -> 0 is CE, q = 1 is MAE."""
    p_y = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).clamp_min(1e-12)
    return (1.0 - p_y.pow(q)) / q


class ELR:
    """Early-Learning Regularization (Liu et al. 2020): t_i <- β t_i + (1-β) p_i;  L = CE + λ · mean log(1 - <t_i, p_i>).

    The targets t are a running average of the model's own (detached) predictions per training example.
    """

    def __init__(self, num_examples: int, num_classes: int, lam: float = 3.0, beta: float = 0.7, device="cpu"):
        self.lam, self.beta = lam, beta
        self.targets = torch.zeros(num_examples, num_classes, device=device)  # (n_train, K)

    def __call__(self, logits, y, index):
        p = F.softmax(logits, dim=1).clamp(1e-4, 1.0 - 1e-4)
        with torch.no_grad():
            p_n = p / p.sum(dim=1, keepdim=True)
            self.targets[index] = self.beta * self.targets[index] + (1 - self.beta) * p_n
        reg = torch.log(1.0 - (self.targets[index] * p).sum(dim=1))
        return F.cross_entropy(logits, y) + self.lam * reg.mean()


def make(name: str, *, num_examples: int, num_classes: int, q: float = 0.7, lam: float = 3.0, beta: float = 0.7,
         device="cpu"):
    """A batch loss `loss(logits, y, index) -> scalar`."""
    if name == "ce":
        return lambda logits, y, index: cross_entropy(logits, y).mean()
    if name == "gce":
        return lambda logits, y, index: gce(logits, y, q).mean()
    if name == "elr":
        return ELR(num_examples, num_classes, lam, beta, device)
    raise ValueError(f"unknown loss {name!r}")
