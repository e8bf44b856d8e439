"""Optuna over a study's dials: the space from the dials, trials in a batch trained together, each trial's value what
single runs of its config give, its runs stored as wb.run would store them."""
import json
import math

import numpy as np
import optuna  # the [tune] extra, which `make test` installs: missing, this fails (it is not skipped)
import pytest

import workbench as wb
from workbench.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIXED = dict(epochs=3, n_train=300, width=16)


def test_the_search_space_comes_from_the_dials():
    space = wb.tune.search_space("label_noise", ["lr", "flip_rate", "loss", "width", "depth"])
    D = optuna.distributions
    assert space["lr"] == D.FloatDistribution(1e-4, 1e-1, log=True)  # soft bounds, spanning decades: log scale
    assert space["flip_rate"] == D.FloatDistribution(0.0, 1.0, log=False)
    assert space["loss"] == D.CategoricalDistribution(["ce", "gce", "elr"])
    assert space["width"] == D.IntDistribution(1, 8192, log=True)
    assert space["depth"] == D.IntDistribution(1, 16, log=False)
    own = wb.tune.search_space("label_noise", {"lr": (1e-3, 1e-2), "width": [16, 32], "gce_q": (0.1, 0.9, "log"),
                                               "loss": None})
    assert own["loss"] == space["loss"]
    assert own["lr"] == D.FloatDistribution(1e-3, 1e-2, log=False)
    assert own["width"] == D.CategoricalDistribution([16, 32])
    assert own["gce_q"] == D.FloatDistribution(0.1, 0.9, log=True)


@pytest.mark.parametrize("space, field, said", [
    (["lr", "widht"], "space", "a dial of study 'label_noise'"),
    (["seed"], "space", "seeds=[...]"),
    ({"lr": (0.5, 20.0)}, "lr", "[1e-07, 10.0]"),  # a range the dial refuses
    ({"width": [16, 0]}, "width", "an integer in [1, 8192]"),
    ({"noise_correlation": (0.5, 0.1)}, "space", "a range (low, high)"),
    ([], "space", "at least one dial"),
    ({"lr": [1e-3, 1e-2, 1e-4, "x"]}, "lr", "a number"),
    ({"lr": (1e-3, 1e-2, "cubic")}, "space", "(low, high, 'log')"),
])
def test_a_bad_space_is_refused_by_name(space, field, said):
    with pytest.raises(ConfigError) as e:
        wb.tune.search_space("label_noise", space)
    assert e.value.field == field and said in str(e.value)


def test_bad_arguments_are_refused_before_any_work(store):
    with pytest.raises(ConfigError, match="searched or fixed"):
        wb.tune.optimize("label_noise", ["lr"], 2, lr=0.01, store=store, progress=False)
    with pytest.raises(ConfigError, match="reduce"):
        wb.tune.optimize("label_noise", ["lr"], 2, reduce="median", store=store, progress=False)
    with pytest.raises(ConfigError, match="width"):
        wb.tune.optimize("label_noise", ["lr"], 2, width=0, store=store, progress=False)
    with pytest.raises(ConfigError, match="per-run"):
        wb.tune.optimize("label_noise", ["lr"], 2, metric="diverged", store=store, progress=False)
    with pytest.raises(KeyError, match="not a metric"):
        wb.tune.optimize("label_noise", ["lr"], 2, metric="accuracy", store=store, progress=False)
    assert store.list() == []


def test_trials_trained_together_give_the_values_of_single_runs(store, tmp_path):
    study = wb.tune.optimize("label_noise", ["lr", "flip_rate", "loss"], n_trials=6, batch=3, seeds=[0, 1],
                             sampler=optuna.samplers.RandomSampler(seed=0), store=store, progress=False, **FIXED)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # test_acc: better = max
    trials = study.trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    alone = wb.Store(tmp_path / "alone")
    for t in trials:
        runs = [wb.run("label_noise", seed=s, **t.params, **FIXED, store=alone, progress=False) for s in (0, 1)]
        assert t.user_attrs["runs"] == [r.id for r in runs]  # the trial's runs are the runs wb.run makes
        expected = np.mean([r.ds["test_acc"].values[-1] for r in runs])
        assert t.value == pytest.approx(expected, abs=1e-6), (t.params, t.value, expected)
        for rid, r in zip(t.user_attrs["runs"], runs):  # stored as the single run is, every variable
            mine = wb.load(rid, store=store)
            assert mine.status == "done"
            assert set(mine.ds.data_vars) == set(r.ds.data_vars)
            for v in r.ds.data_vars:
                if r.ds[v].dtype.kind in "fiub":
                    np.testing.assert_allclose(mine.ds[v].values, r.ds[v].values, rtol=1e-5, atol=1e-7, err_msg=v)
                else:
                    np.testing.assert_array_equal(mine.ds[v].values, r.ds[v].values, err_msg=v)
    # the same sampler seed asks the same trials: read back from the store, not trained again
    stored = len(store.list())
    again = wb.tune.optimize("label_noise", ["lr", "flip_rate", "loss"], n_trials=6, batch=3, seeds=[0, 1],
                             sampler=optuna.samplers.RandomSampler(seed=0), store=store, progress=False, **FIXED)
    assert [t.value for t in again.trials] == [t.value for t in trials]
    assert len(store.list()) == stored
    assert study.best_value == max(t.value for t in trials)


def test_a_study_continues_and_a_minimised_metric_is_minimised(store):
    study = wb.tune.optimize("label_noise", {"lr": (1e-3, 1e-1, "log")}, n_trials=2, metric="test_loss",
                             reduce="best", sampler=optuna.samplers.RandomSampler(seed=1), store=store,
                             progress=False, **FIXED)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    wb.tune.optimize("label_noise", {"lr": (1e-3, 1e-1, "log")}, n_trials=2, metric="test_loss", reduce="best",
                     optuna_study=study, store=store, progress=False, **FIXED)
    assert len(study.trials) == 4 and all(math.isfinite(t.value) for t in study.trials)
    for t in study.trials:
        run = wb.load(t.user_attrs["runs"][0], store=store)
        assert t.value == pytest.approx(float(np.nanmin(run.ds["test_loss"].values)))
    with pytest.raises(ConfigError, match="maximize"):
        wb.tune.optimize("label_noise", ["lr"], 1, optuna_study=study, store=store, progress=False, **FIXED)


def test_a_diverging_trial_fails_and_the_search_goes_on(store):
    study = optuna.create_study(direction="minimize")
    for lr in (1e-3, 10.0):  # trials of the user's choosing, trained in one batch
        study.enqueue_trial({"lr": lr})
    wb.tune.optimize("label_noise", {"lr": [1e-3, 10.0]}, n_trials=2, optimizer="sgd", grad_noise=1000.0,
                     optuna_study=study, metric="train_loss", store=store, progress=False, **FIXED)
    states = {t.params["lr"]: t.state.name for t in study.trials}
    assert states == {1e-3: "COMPLETE", 10.0: "FAIL"}, states
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.user_attrs["statuses"] == ["diverged"]


def test_the_command_line_searches_keeps_the_search_in_a_storage_and_continues_it(tmp_path, capsys):
    from workbench.cli import main

    args = ["tune", "label_noise", "--space", "lr=1e-3:1e-1:log", "--space", "loss=ce,elr", "--trials", "3",
            "--batch", "3", "--epochs", "3", "--width", "16", "--n-train", "300", "--sampler-seed", "0",
            "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["trials"]) == 3 and first["best_params"]["loss"] in ("ce", "elr")
    assert main(args) == 0  # the same storage: three more trials of the same search
    second = json.loads(capsys.readouterr().out)
    assert len(second["trials"]) == 6 and second["trials"][:3] == first["trials"]
    best = max(second["trials"], key=lambda t: t["value"])
    assert second["best_value"] == best["value"]
    run = wb.load(best["runs"][0])  # the best trial's run, as stored
    assert run.ds["test_acc"].values[-1] == pytest.approx(best["value"])
    assert main(args[:-1] + ["--show", "2"]) == 0 and "best: test_acc = " in capsys.readouterr().out
    assert main(["tune", "label_noise", "--space", "lr=1:2:cubic", "--trials", "1"]) == 2
    assert "space" in capsys.readouterr().err
    assert main(["tune", "label_noise", "--trials", "1"]) == 2  # nothing to search
    cfg = tmp_path / "tune.yaml"  # a config file: the space (ranges as strings, choices as lists), trials, dials
    cfg.write_text("space: {lr: '1e-3:1e-1:log', loss: [ce, elr], flip_rate: null}\ntrials: 2\nbatch: 2\n"
                   "epochs: 2\nwidth: 16\nn_train: 300\n")
    assert main(["tune", "label_noise", "--config", str(cfg), "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    assert len(trials) == 2 and set(trials[0]["params"]) == {"lr", "loss", "flip_rate"}
    assert all(1e-3 <= t["params"]["lr"] <= 1e-1 and t["params"]["loss"] in ("ce", "elr") for t in trials)
