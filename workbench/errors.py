"""Errors a user sees. Every bad input names the field, the value and what is allowed."""


class ConfigError(ValueError):
    """A dial (or other input) has a value that is not allowed. Raised before any work starts."""

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}={shown} is not allowed: {allowed}")


class RunNotFound(LookupError):
    """No run with this id in the store."""


class StoreError(OSError):
    """The store cannot do what was asked (its folder is read-only or full, a file is damaged, a path points
    outside it): said in words, with nothing stored lost or half-written."""


class NotOwner(PermissionError):
    """On a shared dashboard a session may cancel, delete or tag only its own jobs and runs."""


class Cancelled(Exception):
    """A run was asked to stop; what it computed so far is kept as `cancelled`."""


class Diverged(Exception):
    """A loss or tensor became NaN/inf. A result, not a crash: recorded with its step."""

    def __init__(self, step: int, where: str = "loss"):
        self.step, self.where = step, where
        super().__init__(f"diverged at step {step} ({where} is not finite)")


#: the optional extras of the package (pyproject.toml) and the libraries each brings
EXTRAS = {"dashboard": "panel, holoviews, bokeh", "notebooks": "jupyterlab, papermill, hvplot", "dask": "dask, distributed",
          "export": "pyarrow, zarr, tensorboard, mlflow-skinny", "tune": "optuna", "data": "datasets (Hugging Face)"}


def require(module: str, extra: str, field: str, value=None):
    """Import an optional library, or say which extra brings it: ConfigError(field, value, ...) naming the pip line.
    Returns the module."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(field, module if value is None else value,
                          f"an installed {module.split('.')[0]} (the [{extra}] extra: pip install "
                          f"'noise-workbench[{extra}]', or pip install -e '.[{extra}]' in a checkout)") from None
