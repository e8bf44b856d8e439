import numpy as np
import pytest
import torch

from workbench import datasets
from workbench.errors import ConfigError


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a, b, c = datasets.digits(1200, 0), datasets.digits(1200, 0), datasets.digits(1200, 1)
    assert a.x_train.shape == (1200, 64) and a.x_test.shape == (597, 64)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.num_classes == 10 and a.image_shape == (8, 8)
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1


@pytest.mark.parametrize("name, classes", [("blobs", 4), ("xor", 2)])
def test_synthetic_sets(name, classes):
    d = datasets.load(name, 500, seed=3)
    assert len(d.y_train) == 500 and d.num_classes == classes
    assert set(d.y_train.tolist()) == set(range(classes))


def test_xor_is_not_linearly_separable():
    from sklearn.linear_model import LogisticRegression

    d = datasets.xor(1500, 0)
    acc = LogisticRegression(max_iter=500).fit(d.x_train, d.y_train).score(d.x_test, d.y_test)
    assert acc < 0.65


def test_xor_dimension_and_separation_are_dials():
    d = datasets.load("xor", 100, seed=0, dim=400, separation=12.0)
    assert d.x_train.shape == (100, 400) and d.x_test.shape == (1900, 400)
    # each point is ±μ1 or ±μ2 plus N(0, I): its projection on its own cluster axis has magnitude ≈ ‖μ‖
    axis = d.x_train[torch.arange(100), d.y_train].abs()
    assert abs(float(axis.mean()) - 12.0) < 0.5
    import workbench as wb

    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", dataset="xor", input_dim=1, progress=False)
    assert e.value.field == "input_dim"


def test_a_long_tailed_training_set_falls_exponentially_and_keeps_its_size_over_seeds():
    sizes = []
    for seed in (0, 1, 2):
        d = datasets.digits(1200, seed)
        lt = datasets.long_tailed(d, 20.0)
        counts = np.bincount(lt.y_train.numpy(), minlength=10)
        sizes.append(counts)
        assert counts[0] / counts[-1] == pytest.approx(20, rel=0.1) and (np.diff(counts) <= 0).all()
        assert torch.equal(lt.x_test, d.x_test) and torch.equal(lt.y_test, d.y_test)  # the test set as it was
        rows = {tuple(r) for r in d.x_train.numpy().round(4).tolist()}
        assert all(tuple(r) in rows for r in lt.x_train.numpy().round(4).tolist())  # a subset of the split
    assert all((s == sizes[0]).all() for s in sizes)  # the same shapes whatever the split's seed
    assert datasets.long_tailed(d, 1.0) is d
    with pytest.raises(ConfigError) as e:  # a split too small to hold the profile is said, naming the dial
        skewed = torch.tensor([0] + [1] * 11)  # class 0 nearly all in the test set
        datasets.long_tailed(datasets.Data("tiny", d.x_train[:12], skewed, d.x_test[:8], torch.tensor([0] * 7 + [1]),
                                           2, (64,)), 3.0)
    assert e.value.field == "imbalance"


def test_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, X=rng.normal(size=(90, 5)), y=rng.integers(0, 3, 90))
    d = datasets.from_npz(p, n_train=60)
    assert d.x_train.shape == (60, 5) and d.num_classes == 3 and len(d.y_test) == 30


@pytest.mark.parametrize("content, words", [
    ({"X": np.zeros((10, 2))}, "'X' and 'y'"),
    ({"X": np.zeros((10, 2)), "y": np.zeros(9, int)}, "shape"),
    ({"X": np.zeros((10, 2)), "y": np.full(10, 0.5)}, "integer class labels"),
    ({"X": np.zeros((10, 2)), "y": np.zeros(10, int)}, "at least 2 classes"),
    ({"X": np.full((10, 2), np.nan), "y": np.arange(10) % 2}, "finite"),
])
def test_malformed_npz_is_refused(tmp_path, content, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **content)
    with pytest.raises(ConfigError) as e:
        datasets.from_npz(p)
    assert e.value.field == "data_path" and words in str(e.value)


def test_not_an_npz(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip file")
    with pytest.raises(ConfigError, match="readable .npz"):
        datasets.from_npz(p)
    with pytest.raises(ConfigError, match="existing .npz"):
        datasets.from_npz(tmp_path / "missing.npz")
