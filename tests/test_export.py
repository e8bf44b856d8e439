"""Results out (the [export] extra, which `make test` installs: a missing library fails here, it is not skipped):
a run and a sweep exported to parquet, zarr and TensorBoard, each read back with the tool's own reader
(pyarrow/pandas, xarray, TensorBoard's event accumulator) and compared value by value with the stored dataset."""
import json

import numpy as np
import pytest

import workbench as wb
from workbench import cli
from workbench.exporters import TensorBoardSink, label, series

from .conftest import FAST

GRID = {"flip_rate": [0.0, 0.4]}


@pytest.fixture
def run(store):
    return wb.run("label_noise", store=store, progress=False, **FAST)


@pytest.fixture
def swept(store):
    return wb.sweep("label_noise", grid=GRID, seeds=[0, 1], store=store, progress=False, **FAST)


def test_parquet_holds_every_record_value_of_a_sweep_in_a_long_table(swept, tmp_path):
    import pyarrow.parquet as pq
    path = wb.export(swept.id, to="parquet", dest=tmp_path, store=swept._store)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"workbench"])
    assert meta["run_id"] == swept.id and meta["kind"] == "sweep" and meta["status"] == "done"
    frame = table.to_pandas()
    assert set(frame.columns) >= {"run_id", "flip_rate", "seed", "epoch", "metric", "value"}
    for (flip, seed), one in frame[frame["metric"] == "test_acc"].groupby(["flip_rate", "seed"]):
        stored = swept.ds["test_acc"].sel(flip_rate=flip, seed=seed)
        np.testing.assert_allclose(one.sort_values("epoch")["value"].values, stored.values, rtol=1e-6)
    n_finite = sum(int(np.isfinite(swept.ds[k].values).sum()) for k in swept.ds.data_vars if "epoch" in swept.ds[k].dims)
    assert len(frame) == n_finite  # every finite record value, once


def test_zarr_reads_back_as_the_same_dataset(run, tmp_path):
    import xarray as xr

    path = wb.export(run, to="zarr", dest=tmp_path)
    back = xr.open_zarr(path).load()
    xr.testing.assert_allclose(back.drop_attrs(), run.ds.drop_attrs())
    assert back.attrs["run_id"] == run.id


def test_tensorboard_has_a_curve_per_metric_and_series_and_the_dials_as_hparams(swept, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = wb.export(swept, to="tensorboard", dest=tmp_path)
    cuts = series(swept.ds, "epoch")
    assert len(cuts) == 4 and sorted(p.name for p in logdir.iterdir()) == sorted(label(lab) for lab, _ in cuts)
    for labels, one in cuts:
        acc = EventAccumulator(str(logdir / label(labels)))
        acc.Reload()
        events = acc.Scalars("test_acc")
        assert [e.step for e in events] == list(one["epoch"].values)
        np.testing.assert_allclose([e.value for e in events], one["test_acc"].values, rtol=1e-6)
        plugins = acc.PluginTagToContent("hparams")
        assert plugins  # the hparams summary: dials and final metrics
        blob = b"".join(plugins.values())
        assert b"flip_rate" in blob and b"final/test_acc" in blob


def test_a_live_sink_writes_tensorboard_while_the_run_trains(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path / "live", axis="epoch")
    try:
        run = wb.run("label_noise", store=store, progress=False, sinks=[sink], **FAST)
    finally:
        sink.close()
    acc = EventAccumulator(str(tmp_path / "live"))
    acc.Reload()
    np.testing.assert_allclose([e.value for e in acc.Scalars("train_loss")], run.ds["train_loss"].values, rtol=1e-6)


def test_the_cli_exports_and_refuses_an_unknown_format_or_run(run, tmp_path, capsys):
    assert cli.main(["export", run.id, "--to", "parquet", str(tmp_path)]) == 0
    assert (tmp_path / f"{run.id}.parquet").is_file() and str(tmp_path) in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: not one of the formats
        cli.main(["export", run.id, "--to", "csv", str(tmp_path)])
    assert cli.main(["export", "000000000000", "--to", "parquet", str(tmp_path)]) == 1
    assert "no run '000000000000'" in capsys.readouterr().err
    with pytest.raises(wb.ConfigError, match="one of parquet, zarr, tensorboard, mlflow"):
        wb.export(run, to="hdf5", dest=tmp_path)


def test_mlflow_has_a_run_per_series_with_params_metric_history_and_the_file(swept, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    store = wb.export(swept, to="mlflow", dest=tmp_path)
    mlflow.set_tracking_uri(f"file:{store}")
    found = mlflow.search_runs(experiment_names=["label_noise"])
    assert len(found) == 4 and set(found["tags.workbench.run_id"]) == {swept.id}
    client = MlflowClient(tracking_uri=f"file:{store}")
    for _, row in found.iterrows():
        flip, seed = float(row["params.flip_rate"]), int(row["params.seed"])
        history = sorted(client.get_metric_history(row["run_id"], "test_acc"), key=lambda m: m.step)
        stored = swept.ds["test_acc"].sel(flip_rate=flip, seed=seed)
        assert [m.step for m in history] == list(stored["epoch"].values)
        np.testing.assert_allclose([m.value for m in history], stored.values, rtol=1e-6)
        assert row["params.epochs"] == str(FAST["epochs"])  # the fixed dials too
        artifacts = [a.path for a in client.list_artifacts(row["run_id"])]
        assert swept.path.name in artifacts


def test_a_live_sink_writes_mlflow_metrics_while_the_run_trains(store, tmp_path):
    from workbench.exporters import MLflowSink

    uri = f"file:{tmp_path / 'mlruns'}"
    sink = MLflowSink("label_noise", uri, run_name="live", params=FAST)
    seen = []

    def watch(record):  # what MLflow holds while the run is still training
        seen.append(len(sink.client.get_metric_history(sink.run_id, "train_loss")))
    try:
        run = wb.run("label_noise", store=store, progress=False, sinks=[sink, watch], **FAST)
    finally:
        sink.close()
    assert seen == list(range(1, len(run.ds["epoch"]) + 1))  # one more point after each record
    history = sorted(sink.client.get_metric_history(sink.run_id, "train_loss"), key=lambda m: m.step)
    np.testing.assert_allclose([m.value for m in history], run.ds["train_loss"].values, rtol=1e-6)
    assert sink.client.get_run(sink.run_id).data.params["epochs"] == str(FAST["epochs"])
