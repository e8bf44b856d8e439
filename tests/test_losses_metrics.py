"""Losses and metrics against their formulas."""
import math

import pytest
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
    loss = elr(z2, y, idx).mean(1)  # per example (K, B): the batch loss is its mean
    for k in range(2):
        p1 = torch.softmax(z1[k], 1).clamp(1e-4, 1 - 1e-4)
        t1 = (1 - beta[k]) * p1 / p1.sum(1, keepdim=True)
        p2 = torch.softmax(z2[k], 1).clamp(1e-4, 1 - 1e-4)
        t2 = beta[k] * t1 + (1 - beta[k]) * p2 / p2.sum(1, keepdim=True)
        torch.testing.assert_close(elr.targets[k, idx[k]], t2)
        expected = torch.nn.functional.cross_entropy(z2[k], y[k]) + lam[k] * torch.log(1 - (t2 * p2).sum(1)).mean()
        torch.testing.assert_close(loss[k], expected)
    assert torch.all(elr.targets[0, [0, 2, 4]] == 0) and torch.all(elr.targets[1, 2:] == 0)


def test_sample_selection_keeps_the_examples_it_says():
    # two models, a batch of four; losses known: CE of logits that put log-probability -l on the label
    per_example = torch.tensor([[0.1, 2.0, 0.3, 4.0], [1.0, 1.2, 3.0, 0.5]], requires_grad=True)
    idx = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    flipped = torch.tensor([[False, True, False, True], [True, False, False, False]])
    mean = lambda v, m: (v * torch.tensor(m, dtype=torch.float32)).sum(1) / torch.tensor(m).sum(1)  # noqa: E731

    assert torch.equal(losses.Selection("all", 2)(per_example, idx), per_example.mean(1))
    # fixed k = round(0.5 · 4) = 2 lowest per model; a per-model keep fraction (0.75: 3 kept)
    keep = [[1, 0, 1, 0], [1, 1, 0, 1]]
    got = losses.Selection("fixed_k", 2, keep=torch.tensor([0.5, 0.75]))(per_example, idx)
    torch.testing.assert_close(got, mean(per_example, keep))
    # the oracle drops what was flipped, looked up at the examples' positions
    oracle = losses.Selection("oracle", 2, flipped=flipped)
    torch.testing.assert_close(oracle(per_example, idx), mean(per_example, [[1, 0, 1, 0], [1, 1, 1, 0]]))
    kept = oracle.take_kept()
    assert torch.allclose(kept["selected"], torch.tensor([0.5, 0.75])) and not kept["selected_flipped"].any()
    fixed = losses.Selection("fixed_k", 2, keep=0.5, flipped=flipped)
    fixed(per_example, idx)  # keeps examples 0 and 2 (model 0: neither flipped), 3 and 0 (model 1: 0 flipped)
    torch.testing.assert_close(fixed.take_kept()["selected_flipped"], torch.tensor([0.0, 0.5]))
    # adaptive k: the first threshold is the batch mean itself (bias-corrected), then a running mean
    ada = losses.Selection("adaptive_k", 2, beta=0.9)
    torch.testing.assert_close(ada(per_example, idx), mean(per_example, [[1, 0, 1, 0], [1, 1, 0, 1]]))
    lower = per_example.detach() / 10
    threshold = (0.9 * 0.1 * per_example.detach().mean(1) + 0.1 * lower.mean(1)) / (1 - 0.9**2)
    torch.testing.assert_close(ada(lower, idx), mean(lower, (lower <= threshold[:, None]).tolist()))
    # the selection is of examples, the gradient of the kept ones is as without selection
    loss = losses.Selection("fixed_k", 2, keep=0.5)(per_example, idx).sum()
    (grad,) = torch.autograd.grad(loss, per_example)
    torch.testing.assert_close(grad, torch.tensor([[0.5, 0, 0.5, 0], [0.5, 0, 0, 0.5]]))
    with pytest.raises(ValueError, match="flipped mask"):
        losses.Selection("oracle", 2)


def test_accuracy_and_ece():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    y = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(logits, y) == 0.75
    # confidences 0.9, 0.6, 0.7, 0.8 fall in separate bins of 10; correct: 1, 0, 1, 1
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    assert math.isclose(metrics.ece(logits, y, bins=10), expected, rel_tol=1e-5)
    assert math.isnan(metrics.accuracy(logits[:0], y[:0]))
