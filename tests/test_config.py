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
