"""Losses and metrics against their formulas."""
import math

import torch

from workbench.engine import losses
from workbench.probes import metrics


def test_gce_formula_and_limits():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    p = torch.softmax(logits, 1)[torch.arange(2), y]
    q = 0.7
    torch.testing.assert_close(losses.gce(logits, y, q), (1 - p**q) / q)
    # q -> 0 approaches cross-entropy, q = 1 is MAE on the true-class probability
    torch.testing.assert_close(losses.gce(logits, y, 1e-4), losses.cross_entropy(logits, y), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(losses.gce(logits, y, 1.0), 1 - p)


def test_elr_targets_are_a_running_average_and_the_loss_matches():
    torch.manual_seed(0)
    elr = losses.ELR(num_examples=5, num_classes=3, lam=2.0, beta=0.6)
    idx = torch.tensor([1, 3])
    y = torch.tensor([0, 2])
    z1, z2 = torch.randn(2, 3), torch.randn(2, 3)
    elr(z1, y, idx)
    p1 = torch.softmax(z1, 1).clamp(1e-4, 1 - 1e-4)
    t1 = 0.4 * p1 / p1.sum(1, keepdim=True)
    torch.testing.assert_close(elr.targets[idx], t1)
    assert torch.all(elr.targets[[0, 2, 4]] == 0)
    loss = elr(z2, y, idx)
    p2 = torch.softmax(z2, 1).clamp(1e-4, 1 - 1e-4)
    t2 = 0.6 * t1 + 0.4 * p2 / p2.sum(1, keepdim=True)
    expected = torch.nn.functional.cross_entropy(z2, y) + 2.0 * torch.log(1 - (t2 * p2).sum(1)).mean()
    torch.testing.assert_close(loss, expected)


def test_accuracy_and_ece():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    y = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(logits, y) == 0.75
    # confidences 0.9, 0.6, 0.7, 0.8 fall in separate bins of 10; correct: 1, 0, 1, 1
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    assert math.isclose(metrics.ece(logits, y, bins=10), expected, rel_tol=1e-5)
    assert math.isnan(metrics.accuracy(logits[:0], y[:0]))
