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
    # two models with their own λ, β and examples: each follows the formula alone
    lam, beta = torch.tensor([2.0, 0.5]), torch.tensor([0.6, 0.9])
    elr = losses.ELR(num_models=2, num_examples=5, num_classes=3, lam=lam, beta=beta)
    idx = torch.tensor([[1, 3], [0, 1]])
    y = torch.tensor([[0, 2], [1, 1]])
    z1, z2 = torch.randn(2, 2, 3), torch.randn(2, 2, 3)
    elr(z1, y, idx)
    loss = elr(z2, y, idx)
    for k in range(2):
        p1 = torch.softmax(z1[k], 1).clamp(1e-4, 1 - 1e-4)
        t1 = (1 - beta[k]) * p1 / p1.sum(1, keepdim=True)
        p2 = torch.softmax(z2[k], 1).clamp(1e-4, 1 - 1e-4)
        t2 = beta[k] * t1 + (1 - beta[k]) * p2 / p2.sum(1, keepdim=True)
        torch.testing.assert_close(elr.targets[k, idx[k]], t2)
        expected = torch.nn.functional.cross_entropy(z2[k], y[k]) + lam[k] * torch.log(1 - (t2 * p2).sum(1)).mean()
        torch.testing.assert_close(loss[k], expected)
    assert torch.all(elr.targets[0, [0, 2, 4]] == 0) and torch.all(elr.targets[1, 2:] == 0)


def test_accuracy_and_ece():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    y = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(logits, y) == 0.75
    # confidences 0.9, 0.6, 0.7, 0.8 fall in separate bins of 10; correct: 1, 0, 1, 1
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    assert math.isclose(metrics.ece(logits, y, bins=10), expected, rel_tol=1e-5)
    assert math.isnan(metrics.accuracy(logits[:0], y[:0]))
