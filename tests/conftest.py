import os

import pytest


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """Every test gets its own store: nothing lands in the repository's data/."""
    root = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


@pytest.fixture
def store(data_root):
    from workbench import Store

    return Store(data_root)


#: small, fast settings for the label-noise study
FAST = dict(epochs=3, width=32, n_train=300)


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
