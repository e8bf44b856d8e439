"""Config files for `workbench run|sweep --config`, and the dials' JSON Schema (`workbench dials STUDY --schema`)."""
import json
from pathlib import Path

import jsonschema
import pytest

import workbench as wb
from workbench import cli
from workbench.studies import get as get_study, names as study_names


@pytest.mark.parametrize("study", study_names())
def test_every_studys_schema_is_valid_and_accepts_its_defaults(study, capsys):
    assert cli.main(["dials", study, "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    cls = get_study(study)
    assert set(schema["properties"]) == set(cls.dials())
    jsonschema.validate(cls.defaults(), schema)  # the defaults are a valid config
    jsonschema.validate(cls.tiny, schema)


def test_the_schema_says_what_each_dial_allows():
    schema = get_study("label_noise").json_schema()
    flip = schema["properties"]["flip_rate"]
    assert flip["type"] == "number" and flip["minimum"] == 0 and flip["maximum"] == 1 and flip["default"] == 0.4
    assert "labels" in flip["description"]
    assert schema["properties"]["loss"]["enum"] == ["ce", "gce", "elr"]
    assert schema["properties"]["width"]["type"] == "integer"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({"flip_rate": 2, "widht": 64}))
    assert len(errors) == 2  # out of bounds, and a key that is no dial


def test_dials_prints_a_table_and_json(capsys):
    assert cli.main(["dials", "label_noise"]) == 0
    out = capsys.readouterr().out
    assert "flip_rate" in out and "a number in [0.0, 1.0]" in out
    assert cli.main(["dials", "grokking", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["dial"] for r in rows} == set(get_study("grokking").dials())


def test_run_from_a_yaml_file_equals_the_same_dials_on_the_command_line(tmp_path, data_root, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# a run of the label-noise study\nflip_rate: 0.2\nepochs: 2\nwidth: 16\nn_train: 200\n"
                   "loss: elr\n")
    assert cli.main(["run", "label_noise", "--config", str(cfg), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["params"]["flip_rate"] == 0.2 and from_file["params"]["loss"] == "elr"
    same = wb.run("label_noise", flip_rate=0.2, epochs=2, width=16, n_train=200, loss="elr", progress=False)
    assert same.id == from_file["id"]  # the same config: read back, not trained again
    # the command line wins over the file
    assert cli.main(["run", "label_noise", "--config", str(cfg), "--width", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["width"] == 8


def test_sweep_from_a_json_file_with_its_grid_and_seeds(tmp_path, data_root, capsys):
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"grid": {"flip_rate": [0.0, 0.4]}, "seeds": 2, "epochs": 2, "width": 16,
                               "n_train": 200, "loss_snapshots": 0}))
    assert cli.main(["sweep", "label_noise", "--config", str(cfg), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and out["final_test_acc"]["dims"] == ["flip_rate", "seed"]
    assert len(out["final_test_acc"]["values"]) == 2 and len(out["final_test_acc"]["values"][0]) == 2
    # a --grid for the same dial replaces the file's values
    assert cli.main(["sweep", "label_noise", "--config", str(cfg), "--grid", "flip_rate=0.2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["final_test_acc"]["values"]) == 1


@pytest.mark.parametrize("text, name, words", [
    ("flip_rate: 7\n", "cfg.yaml", "flip_rate (in cfg.yaml)=7.0 is not allowed: a number in [0.0, 1.0]"),
    ("widht: 64\n", "cfg.yaml", "did you mean width?"),
    ("epochs: many\n", "cfg.yaml", "epochs (in cfg.yaml)='many'"),
    ("- 1\n- 2\n", "cfg.yaml", "a mapping of dial names to values (the file holds a list)"),
    ("flip_rate: [0.1\n", "cfg.yaml", "a YAML or JSON mapping"),
    ('{"flip_rate": 0.1,}', "cfg.json", "a YAML or JSON mapping"),
    ("grid:\n  width: [16, 0]\n", "cfg.yaml", "grid.width (in cfg.yaml)=0"),
])
def test_a_bad_config_file_is_refused_before_any_work(tmp_path, data_root, capsys, text, name, words):
    cfg = tmp_path / name
    cfg.write_text(text)
    command = "sweep" if "grid" in text else "run"
    assert cli.main([command, "label_noise", "--config", str(cfg)]) == 2
    assert words in capsys.readouterr().err
    assert not (data_root / "runs").exists() and not (data_root / "sweeps").exists()  # nothing was stored


def test_a_missing_config_file_is_said(capsys, tmp_path):
    assert cli.main(["run", "label_noise", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "a YAML or JSON file that exists" in capsys.readouterr().err


def test_the_data_folder_is_the_checkouts_else_the_users_never_the_working_directory(tmp_path, monkeypatch):
    import platformdirs

    from workbench.runs import store

    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    assert store.default_root() == cli.REPO / "data"  # run from this checkout
    installed = tmp_path / "site-packages" / "workbench" / "runs" / "store.py"  # a pip-installed copy
    monkeypatch.chdir(tmp_path)
    assert store.default_root(installed) == Path(platformdirs.user_data_dir("noise-workbench", appauthor=False))
    assert tmp_path not in store.default_root(installed).parents
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "elsewhere"))
    assert store.default_root(installed) == tmp_path / "elsewhere"
    assert (cli.REPO / "data" / "README.md").is_file()  # the folder ships, saying what lands there
