"""Training losses for noisy labels, batched over models.

Shapes: logits (K, B, C), labels y (K, B), index (K, B) = the examples' positions in the training set (for losses
that keep per-example state). Each loss returns the per-model mean over the batch, shape (K,), or over the examples
a sample selection keeps (`SELECTIONS`: small-loss selection against label noise). Per-model hyper-parameters are
(K,) tensors or scalars.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAMES = ("ce", "gce", "elr")
SELECTIONS = ("all", "fixed_k", "adaptive_k", "oracle")


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
        return cross_entropy(logits, y) + self.lam[:, None] * reg  # per example (K, B)


class Selection:
    """Which examples of a batch a step learns from: the mean loss over the kept ones (K,).

    all         every example.
    fixed_k     the k = round(keep · B) lowest-loss examples of each batch (the small-loss trick of Co-teaching,
                with a fixed k: it needs the noise rate to set k well).
    adaptive_k  the examples whose loss is at most a threshold found during training (Adaptive-k, Dedeoglu et al.
                2023): here the bias-corrected running mean (β = 0.9) of the batch-mean loss, an estimate of the
                loss over the whole data set; it needs no noise rate.
    oracle      the examples whose labels were not flipped (the mask only a simulation knows): the bound the
                others are measured against.
    Until `active` is set (the study's warm-up: the early-learning epochs, when the clean examples are learnt first
    and the losses begin to tell them from the flipped), every example is kept, the running mean still tracked.
    The selection is made on detached losses; the kept losses' gradients are as without selection. With the flipped
    mask given, it also counts how many of the kept examples were flipped (`take_kept`).
    """

    def __init__(self, kind: str, num_models: int, keep=0.6, flipped: torch.Tensor | None = None, beta: float = 0.9,
                 device="cpu"):
        if kind not in SELECTIONS:
            raise ValueError(f"unknown selection {kind!r}")
        if kind == "oracle" and flipped is None:
            raise ValueError("the oracle selection needs the flipped mask")
        self.kind, self.flipped, self.beta, self.t = kind, flipped, beta, 0
        self.active = True
        self.keep = torch.as_tensor(keep, dtype=torch.float32, device=device).reshape(-1)  # (K,) or (1,)
        self.mean = torch.zeros(num_models, device=device)  # running mean of the batch-mean loss (adaptive_k)
        # examples seen, kept, and kept with a flipped label since the last `take_kept`
        self.seen, self.kept, self.kept_flipped = (torch.zeros(num_models, device=device) for _ in range(3))

    def __call__(self, per_example: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.kind == "all":
            return per_example.mean(1)
        with torch.no_grad():
            loss = per_example.detach()
            rows = torch.arange(len(index), device=index.device)[:, None]
            flipped = None if self.flipped is None else self.flipped[rows, index]
            if self.kind == "adaptive_k":
                self.t += 1
                self.mean.mul_(self.beta).add_(loss.mean(1), alpha=1 - self.beta)
            if self.kind == "oracle":
                mask = ~flipped
            elif not self.active:
                mask = torch.ones_like(loss, dtype=torch.bool)
            elif self.kind == "fixed_k":
                b = loss.shape[1]
                k = (self.keep * b).round().clamp(1, b)  # (K,) or (1,): the number kept per model
                rank = loss.argsort(1).argsort(1)  # 0 for each model's lowest loss
                mask = rank < k[:, None]
            else:
                threshold = self.mean / (1 - self.beta ** self.t)
                mask = loss <= threshold[:, None]
            w = mask.float()
            self.seen += w.shape[1]
            self.kept += w.sum(1)
            if flipped is not None:
                self.kept_flipped += (w * flipped).sum(1)
        if not self.active and self.kind != "oracle":
            return per_example.mean(1)
        return (per_example * w).sum(1) / w.sum(1).clamp_min(1.0)  # no example kept: a zero step

    def take_kept(self) -> dict[str, torch.Tensor]:
        """Since the last call, per model: `selected`, the share of the examples seen that were kept, and
        `selected_flipped`, the share of the kept ones whose labels were flipped (nan without a flipped mask, before
        any step, and for `all`, which selects nothing); resets the counts."""
        nan = torch.full_like(self.seen, float("nan"))
        seen = torch.where(self.seen > 0, self.seen, nan)  # `all` counts nothing: nan
        out = {"selected": self.kept / seen,
               "selected_flipped": nan if self.flipped is None else self.kept_flipped / torch.where(
                   self.kept > 0, self.kept, nan)}
        for v in (self.seen, self.kept, self.kept_flipped):
            v.zero_()
        return out


def make(name: str, *, num_models: int = 1, num_examples: int, num_classes: int, q=0.7, lam=3.0, beta=0.7,
         device="cpu", selection: Selection | None = None):
    """A batch loss `loss(logits, y, index) -> (K,)`: per-model means over the batch, or over the examples
    `selection` keeps."""
    select = selection or Selection("all", num_models, device=device)
    if name == "ce":
        per_example = lambda logits, y, index: cross_entropy(logits, y)  # noqa: E731
    elif name == "gce":
        q_ = torch.as_tensor(q, dtype=torch.float32, device=device).reshape(-1, 1)
        per_example = lambda logits, y, index: gce(logits, y, q_)  # noqa: E731
    elif name == "elr":
        per_example = ELR(num_models, num_examples, num_classes, lam, beta, device)
    else:
        raise ValueError(f"unknown loss {name!r}")
    return lambda logits, y, index: select(per_example(logits, y, index), index)
