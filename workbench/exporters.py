"""Results out, to the tools researchers already use: a stored run or sweep as a long parquet table, a zarr store,
TensorBoard event files (scalars per metric and per series — a sweep cell and seed —, with the dials as hparams) or
an MLflow file store (a run per series: params, metrics with steps, the netCDF file as an artifact); and a live sink that writes a run's records to TensorBoard while it trains.

    wb.export("3f2a9c1b0e44", to="parquet", dest="out/")       # or: workbench export 3f2a9c1b0e44 --to parquet out/

The libraries are optional (`pip install -e ".[export]"`): pyarrow, zarr, tensorboard, mlflow (mlflow-skinny). A missing one is named, with
the command that installs it, before anything is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import ConfigError, require

FORMATS = {"parquet": "pyarrow", "zarr": "zarr", "tensorboard": "tensorboard",
           "mlflow": "mlflow"}  # format -> the library it needs


def _needs(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("to", fmt, f"one of {', '.join(FORMATS)}")
    require(FORMATS[fmt], "export", "to", fmt)


def _resolve(run, store=None):
    from .runs import Run, load

    return run if isinstance(run, Run) else load(str(run), store=store)


def series(ds: xr.Dataset, axis: str) -> list[tuple[dict, xr.Dataset]]:
    """The dataset cut into its curves: one (labels, dataset along the axis) per combination of the other dims of
    its record metrics (a sweep's dials and seed; a group's model); a single run is one series with no labels."""
    records = [k for k, v in ds.data_vars.items() if axis in v.dims]
    extra = [d for d in dict.fromkeys(d for k in records for d in ds[k].dims) if d != axis]
    if not extra:
        return [({}, ds[records])]
    stacked = ds[records].stack(series=extra)
    out = []
    for i in range(stacked.sizes["series"]):
        one = stacked.isel(series=i)
        labels = {d: one[d].values.item() for d in extra}
        out.append((labels, one.drop_vars(["series", *extra], errors="ignore")))
    return out


def table(ds: xr.Dataset, axis: str) -> pd.DataFrame:
    """The record metrics as one long table: a column per dim (the dials swept, seed, the axis), then metric and
    value; one row per finite value."""
    rows = []
    for labels, one in series(ds, axis):
        frame = one.to_dataframe().reset_index()
        frame = frame[[axis, *[k for k in one.data_vars]]].melt(id_vars=[axis], var_name="metric",
                                                                  value_name="value")
        for k, v in labels.items():
            frame.insert(0, k, v)
        rows.append(frame)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[axis, "metric", "value"])
    return out[np.isfinite(out["value"].astype(float))].reset_index(drop=True)


def label(labels: dict) -> str:
    """A series' name: 'flip_rate=0.4,seed=1' (a single run: 'run')."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in labels.items()) or "run"


def export(run, to: str, dest, store=None) -> Path:
    """Write a stored run or sweep (a Run, a Sweep or an id) to `dest` in format `to` (parquet, zarr, tensorboard,
    mlflow); returns the path written: DEST/ID.parquet, DEST/ID.zarr, DEST/ID/ (a TensorBoard log dir, a subfolder
    per series) or DEST/mlruns (an MLflow file store; exports of several runs share it)."""
    _needs(to)
    result = _resolve(run, store)
    from .studies import get as get_study

    axis = get_study(result.study).axis
    ds = result.ds
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    meta = {"run_id": result.id, "study": result.study, "kind": result.meta.get("kind", "run"),
            "status": result.status, "params": result.config, "code": result.meta.get("code")}
    if to == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = table(ds, axis)
        frame.insert(0, "run_id", result.id)
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               b"workbench": json.dumps(meta, default=str).encode()})
        path = dest / f"{result.id}.parquet"
        pq.write_table(arrow, path)
        return path
    if to == "zarr":
        path = dest / f"{result.id}.zarr"
        out = ds.copy()
        out.attrs = {k: v for k, v in out.attrs.items() if isinstance(v, (str, int, float))}
        out.to_zarr(path, mode="w", zarr_format=2, consolidated=True)  # v2: read by every zarr library
        return path
    if to == "mlflow":
        return write_mlflow(result, ds, axis, dest, meta)
    path = dest / result.id
    write_tensorboard(ds, axis, path, meta)
    return path


def write_mlflow(result, ds: xr.Dataset, axis: str, dest: Path, meta: dict) -> Path:
    """An MLflow file store at DEST/mlruns: experiment = the study, an MLflow run per series (its dials as params,
    each record metric with its steps, tags naming the workbench run), the run's netCDF file as an artifact of each.
    Read it with `mlflow.set_tracking_uri("file:DEST/mlruns")` and `mlflow.search_runs(experiment_names=[study])`.
    (MLflow 3 keeps its file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set: set
    here for this export if unset; `mlflow migrate-filestore` moves such a store to a database.)"""
    import os
    import time

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    store = dest / "mlruns"
    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name(result.study)
    eid = experiment.experiment_id if experiment else client.create_experiment(result.study)
    fixed = _fixed_dials(meta)
    now = int(time.time() * 1000)
    for labels, one in series(ds, axis):
        dials = {k: v for k, v in {**fixed, **labels}.items() if not isinstance(v, (dict, list))}
        tags = {"workbench.run_id": result.id, "workbench.study": result.study, "workbench.status": result.status,
                "workbench.kind": meta["kind"], "workbench.code": str(meta.get("code"))}
        run = client.create_run(eid, run_name=f"{result.id} {label(labels)}", tags=tags)
        steps = one[axis].values
        metrics = [Metric(name, float(v), now, int(step)) for name in one.data_vars
                   for step, v in zip(steps, one[name].values.astype(float)) if np.isfinite(v)]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000],
                             params=[Param(k, str(v)[:6000]) for k, v in dials.items()] if i == 0 else [],
                             tags=[RunTag(k, v) for k, v in tags.items()] if i == 0 else [])
        client.log_artifact(run.info.run_id, str(result.path))
        client.set_terminated(run.info.run_id, "FINISHED" if result.status == "done" else "FAILED")
    return store


def _fixed_dials(meta: dict) -> dict:
    """The dials every series shares: a run's own, a sweep's fixed ones (its swept ones label each series)."""
    params = meta["params"] if isinstance(meta["params"], dict) else {}
    return params.get("fixed", params) if meta["kind"] == "sweep" else params


def write_tensorboard(ds: xr.Dataset, axis: str, logdir: Path, meta: dict) -> None:
    """Scalars per metric and series (a subfolder each), step = the study's axis; each series' dials and final
    metrics as TensorBoard hparams."""
    from torch.utils.tensorboard import SummaryWriter

    fixed = _fixed_dials(meta)
    for labels, one in series(ds, axis):
        writer = SummaryWriter(log_dir=str(Path(logdir) / label(labels)))
        try:
            steps = one[axis].values
            final = {}
            for name in one.data_vars:
                values = one[name].values.astype(float)
                for step, v in zip(steps, values):
                    if np.isfinite(v):
                        writer.add_scalar(name, float(v), int(step))
                finite = values[np.isfinite(values)]
                if finite.size:
                    final[f"final/{name}"] = float(finite[-1])
            hp = {k: v for k, v in {**fixed, **labels}.items() if isinstance(v, (int, float, str, bool))}
            writer.add_hparams(hp, final, run_name=".")
        finally:
            writer.close()


class TensorBoardSink:
    """A run's records to TensorBoard as they are emitted: `wb.run(..., sinks=[TensorBoardSink("runs/x")])`.
    Step = the study's axis value of each record."""

    def __init__(self, logdir, axis: str = "epoch"):
        _needs("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.axis = axis
        self.writer = SummaryWriter(log_dir=str(logdir))

    def __call__(self, record: dict) -> None:
        step = int(record.get(self.axis, record.get("step", 0)))
        for k, v in record.items():
            if k in (self.axis, "step") or not isinstance(v, (int, float)) or not np.isfinite(v):
                continue
            self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    """A run's records to MLflow as they are emitted: an MLflow run (in `tracking_uri`, experiment = the study) whose
    metrics grow while the workbench run trains; `close()` ends it. `wb.run(..., sinks=[MLflowSink(study, uri)])`.
    A file store (file:DIR) is allowed as in export()."""

    def __init__(self, study: str, tracking_uri: str, run_name: str | None = None, params: dict | None = None,
                 axis: str | None = None):
        _needs("mlflow")
        import os

        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        from .studies import get as get_study

        self.axis = axis or get_study(study).axis
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(study)
        eid = experiment.experiment_id if experiment else self.client.create_experiment(study)
        self.run_id = self.client.create_run(eid, run_name=run_name, tags={"workbench.study": study}).info.run_id
        for k, v in (params or {}).items():
            self.client.log_param(self.run_id, k, str(v))

    def __call__(self, record: dict) -> None:
        import time

        from mlflow.entities import Metric

        step, now = int(record.get(self.axis, record.get("step", 0))), int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in record.items()
                   if k not in (self.axis, "step") and isinstance(v, (int, float)) and np.isfinite(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
