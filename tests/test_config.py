"""Bad dials fail before any work starts, naming the field, the value and what is allowed."""
import numpy as np
import pytest

import workbench as wb
from workbench.errors import ConfigError

from .conftest import FAST


@pytest.mark.parametrize("dials, field, words", [
    ({"flip_rate": 1.2}, "flip_rate", "[0.0, 1.0]"),
    ({"flip_rate": "abc"}, "flip_rate", "a number"),
    ({"width": 0}, "width", "an integer in [1, 8192]"),
    ({"width": 2.5}, "width", "an integer"),
    ({"dataset": "imagenet"}, "dataset", "one of digits, blobs, xor, npz"),
    ({"loss": "mse"}, "loss", "one of ce, gce, elr"),
    ({"noise_kind": "matrix", "transition_matrix": [[0.5, 0.4] + [0.0] * 8] + [[0.0] * 10] * 9},
     "transition_matrix", "rows summing to 1"),
    ({"noise_kind": "matrix"}, "transition_matrix", "row-stochastic"),
    ({"dataset": "npz"}, "data_path", ".npz"),
    ({"model": "cnn", "dataset": "xor"}, "model", "no image shape"),
    ({"flip_rte": 0.3}, "flip_rte", "a dial of study 'label_noise'"),
    ({"n_train": 5000}, "n_train", "between 1 and"),
])
def test_bad_dials_are_refused_before_anything_is_stored(store, dials, field, words):
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", store=store, progress=False, **dials)
    assert isinstance(e.value, ValueError)
    assert e.value.field == field
    assert field in str(e.value) and words in str(e.value)
    assert store.list() == [] and not (store.root / "runs").exists()


def test_malformed_npz_through_the_study(store, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((10, 3)))
    with pytest.raises(ConfigError, match="data_path"):
        wb.run("label_noise", dataset="npz", data_path=str(bad), store=store, progress=False)
    assert store.list() == []


def test_unknown_study():
    with pytest.raises(ConfigError, match="study='nope'.*label_noise"):
        wb.run("nope")


def test_strings_are_coerced_like_the_cli_and_url_give_them(store):
    cls = wb.studies  # noqa: F841 - the contract: a function listing the studies
    assert "label_noise" in wb.studies()
    from workbench.studies import get

    s = get("label_noise").configure(flip_rate="0.25", width="64", transition_matrix="null")
    assert s.flip_rate == 0.25 and s.width == 64 and s.transition_matrix is None


def test_a_user_npz_runs(store, tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, X=rng.normal(size=(120, 6)), y=rng.integers(0, 3, 120))
    run = wb.run("label_noise", dataset="npz", data_path=str(p), n_train=0, epochs=2, width=16, store=store,
                 progress=False)
    assert run.status == "done" and run.ds.sizes["example"] == 80


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _bad_data(tmp_path):
    """Each kind of bad user data the issue lists, and words its refusal must say."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.arange(60) % 2
    np.save(tmp_path / "one.npy", x)
    bomb = tmp_path / "bomb.npz"  # 200 MB of zeros in about 200 KB
    np.savez_compressed(bomb, X=np.zeros((50, 1_000_000), np.float32), y=np.arange(50) % 2)
    return [
        (_npz(tmp_path / "huge_labels.npz", X=x, y=np.where(y == 1, 10**9, 0)), "at most 10,000 classes"),
        (_npz(tmp_path / "no_columns.npz", X=np.zeros((60, 0)), y=y), "at least one feature"),
        (_npz(tmp_path / "overflow.npz", X=np.full((60, 4), 1e300), y=y), "float32's range"),
        (_npz(tmp_path / "complex.npz", X=x + 1j, y=y), "real numbers"),
        (_npz(tmp_path / "gaps.npz", X=x, y=y * 7), "every class present"),
        (str(tmp_path / "one.npy"), "this is an .npy file"),
        (str(bomb), "decompression bomb"),
    ]


def test_bad_user_data_is_refused_before_any_work(store, tmp_path):
    for path, words in _bad_data(tmp_path):
        with pytest.raises(ConfigError) as e:
            wb.run("label_noise", dataset="npz", data_path=path, n_train=30, store=store, progress=False)
        assert e.value.field == "data_path" and words in str(e.value), (path, str(e.value))
        with pytest.raises(ConfigError) as e:  # a sweep is refused the same way
            wb.sweep("label_noise", grid={"flip_rate": [0.0, 0.2]}, dataset="npz", data_path=path, n_train=30,
                     store=store, progress=False)
        assert e.value.field == "data_path" and words in str(e.value)
    assert store.list() == [] and not (store.root / "runs").exists()


def test_an_npz_that_would_not_fit_in_memory_is_refused_from_its_headers(store, tmp_path, monkeypatch):
    path = _npz(tmp_path / "big.npz", X=np.zeros((1000, 100), np.float32), y=np.arange(1000) % 2)
    monkeypatch.setenv("WORKBENCH_MAX_DATA_BYTES", "100000")  # X alone is 400,000 bytes
    with pytest.raises(ConfigError, match=r"at most 0 MiB in memory \(WORKBENCH_MAX_DATA_BYTES"):
        wb.run("label_noise", dataset="npz", data_path=path, n_train=30, store=store, progress=False)


def test_an_array_larger_than_its_archive_entry_is_refused(tmp_path):
    """An .npy header claiming a shape larger than its entry would allocate that shape: refused from the header."""
    import zipfile

    from workbench import datasets

    header = np.lib.format  # write a header that says (10**9, 10) float64 above 80 bytes of data
    p = tmp_path / "lying.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open("X.npy", "w") as f:
            header.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10)})
            f.write(b"\0" * 80)
        with z.open("y.npy", "w") as f:
            np.save(f, np.arange(10) % 2)
    with pytest.raises(ConfigError, match="match their entries"):
        datasets.from_npz(p)


@pytest.mark.parametrize("device, words", [
    ("meta", "auto, cpu, cuda, cuda:N or mps"),
    ("tpu", "auto, cpu, cuda, cuda:N or mps"),
    ("mps", "a device this machine has"),
    ("cuda:99", "a device this machine has"),
])
def test_an_absent_device_is_refused_before_any_work(store, device, words):
    import torch

    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ConfigError) as e:
        wb.run("label_noise", device=device, **FAST, store=store, progress=False)
    assert e.value.field == "device" and words in str(e.value)
    with pytest.raises(ConfigError) as e:
        wb.sweep("label_noise", grid={"flip_rate": [0.0]}, device=device, **FAST, store=store, progress=False)
    assert e.value.field == "device"
    assert store.list() == []
