"""Label-noise math against its definition (DESIGN.md conventions)."""
import math

import pytest
import torch

from workbench.errors import ConfigError
from workbench.noise import labels


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8, 1.0])
@pytest.mark.parametrize("k", [2, 3, 10])
def test_transition_matrices_are_row_stochastic(kind, rate, k):
    T = labels.transition_matrix(kind, k, rate)
    assert T.shape == (k, k)
    assert torch.all(T >= 0)
    torch.testing.assert_close(T.sum(1), torch.ones(k, dtype=torch.float64))
    assert torch.allclose(torch.diagonal(T), torch.full((k,), 1 - rate, dtype=torch.float64))


def test_symmetric_spreads_uniformly_over_the_other_classes():
    T = labels.transition_matrix("symmetric", 10, 0.4)
    off = T[~torch.eye(10, dtype=bool)]
    assert torch.allclose(off, torch.full_like(off, 0.4 / 9))


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.7])
@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_empirical_changed_fraction_is_the_rate(rate, kind):
    n, k = 20_000, 10
    g = torch.Generator().manual_seed(123)
    y = torch.randint(0, k, (n,), generator=g)
    y_noisy, flipped = labels.flip(y, labels.transition_matrix(kind, k, rate), generator=g)
    se = math.sqrt(rate * (1 - rate) / n)
    assert abs(flipped.float().mean().item() - rate) < 3 * se
    assert torch.equal(flipped, y_noisy != y)
    if kind == "symmetric":
        # a flipped label never stays on its class, and lands on every other class about equally often
        assert not torch.any(y_noisy[flipped] == y[flipped])
        shift = (y_noisy[flipped] - y[flipped]) % k
        counts = torch.bincount(shift, minlength=k)[1:].float()
        expected = flipped.sum().item() / (k - 1)
        assert torch.all((counts - expected).abs() < 4 * math.sqrt(expected))
    else:
        assert torch.equal(y_noisy[flipped], (y[flipped] + 1) % k)


def test_flip_is_reproducible_from_the_generator():
    y = torch.arange(10).repeat(100)
    T = labels.transition_matrix("symmetric", 10, 0.3)
    a = labels.flip(y, T, torch.Generator().manual_seed(7))[0]
    b = labels.flip(y, T, torch.Generator().manual_seed(7))[0]
    c = labels.flip(y, T, torch.Generator().manual_seed(8))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_user_matrix_follows_its_rows():
    T = [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    y = torch.zeros(20_000, dtype=torch.long)
    y_noisy, flipped = labels.flip(y, labels.transition_matrix("matrix", 3, matrix=T), torch.Generator().manual_seed(0))
    assert set(y_noisy.tolist()) == {0, 1}
    assert abs(flipped.float().mean().item() - 0.5) < 3 * math.sqrt(0.25 / 20_000)


@pytest.mark.parametrize("matrix, words", [
    ([[0.5, 0.4], [0.0, 1.0]], "rows summing to 1"),
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "3x3"),
    ([[1.5, -0.5], [0.0, 1.0]], "[0, 1]"),
    ("not a matrix", "matrix"),
])
def test_bad_user_matrix_is_refused_with_the_reason(matrix, words):
    k = 3 if len(matrix) == 2 and len(matrix[0]) == 3 else 2
    with pytest.raises(ConfigError) as e:
        labels.transition_matrix("matrix", k, matrix=matrix)
    assert e.value.field == "transition_matrix" and words in str(e.value)


def test_bad_rate_and_kind():
    with pytest.raises(ConfigError, match="flip_rate=1.2"):
        labels.transition_matrix("symmetric", 10, 1.2)
    with pytest.raises(ConfigError, match="noise_kind='asym'"):
        labels.transition_matrix("asym", 10, 0.2)
