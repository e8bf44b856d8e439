import contextlib
import os

import pytest


@contextlib.contextmanager
def optimizer_steps():
    """Counts every torch optimiser step taken inside the block (the list's length): how many trainings ran."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps: list = []
    hook = register_optimizer_step_post_hook(lambda *a: steps.append(1))
    try:
        yield steps
    finally:
        hook.remove()


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


@pytest.fixture
def shared_data(tmp_path_factory, monkeypatch):
    """One store for the whole test session, for tests that train the same configs (the diffusion reproductions
    and the quick reproduction profile): the second reads the first's runs back instead of training again. Under
    pytest-xdist the test processes share it too (their temporary folders are siblings): a run one process
    stored is read by the other (the store is safe for writers in several processes)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-data"
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


#: small, fast settings for the label-noise study
FAST = dict(epochs=3, width=32, n_train=300)


#: the modules that take longest on two cores (the sum of their tests' times in make test, 2026-12-07), longest
#: first: the test processes take whole modules in collection order, so a long module collected last runs alone
#: at the end of the suite
LONGEST_FIRST = ("test_seen", "test_notebooks", "test_cluster", "test_app", "test_claims", "test_diffusion",
                 "test_jupyterlab", "test_reproduction", "test_load", "test_protocol", "test_plugins", "test_packaging",
                 "test_faults", "test_grokking", "test_reproduce", "test_sweep", "test_bring_your_own",
                 "test_edge_of_stability", "test_runs", "test_tune", "test_cli")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # a stable sort: the order within a module (and of the other modules) is kept
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if getattr(config.option, "loadscopereorder", None):
        # pytest-xdist's loadscope re-sorts modules by their number of tests unless told not to: that put the
        # one-test JupyterLab module (1-2.5 min) last, alone, and undid the order above
        config.option.loadscopereorder = False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the suite runs in several test processes (make test: -n 3 on two cores): one torch thread each, for this
        # process and what it starts (servers, kernels, workers): two processes of two threads each on two cores
        # spin against each other (a 30-step diffusion run took 10x as long)
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
