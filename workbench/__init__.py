"""Noise Workbench: how noise shapes learning.

    import workbench as wb
    wb.studies()
    run = wb.run("label_noise", flip_rate=0.4, epochs=60)
    run.ds                       # xarray.Dataset
    wb.viz.overview(run)         # the app's plots
    wb.tune.optimize("label_noise", ["lr"], n_trials=16, epochs=30)   # Optuna, trials trained together
"""
__version__ = "0.1.0"

from . import noise  # noqa: E402
from .errors import Cancelled, ConfigError, Diverged, NotOwner, RunNotFound, StoreError  # noqa: E402
from .runs import Run, Store, Sweep, load, run, sweep  # noqa: E402


def export(run, to: str, dest, store=None):
    """A stored run or sweep (or its id) out to parquet, zarr, TensorBoard or MLflow (workbench.exporters)."""
    from .exporters import export as _export

    return _export(run, to, dest, store=store)


def studies() -> list[str]:
    """Names of the studies, e.g. ['label_noise', ...]."""
    from .studies import names

    return names()


def __getattr__(name):
    # viz pulls in HoloViews/Bokeh; import it only when asked for
    if name in ("viz", "tune"):  # HoloViews and Panel; Optuna (optional extras): imported when asked for
        import importlib

        from .errors import require

        require(*{"viz": ("holoviews", "dashboard"), "tune": ("optuna", "tune")}[name], f"wb.{name}")
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["ConfigError", "Cancelled", "Diverged", "NotOwner", "Run", "RunNotFound", "Store", "StoreError", "export",
           "load", "noise", "run", "studies", "sweep", "Sweep", "tune", "viz"]
