"""The `workbench` command, in process (main(argv)) and once as a real subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import main

RUN = ["run", "label_noise", "--epochs", "2", "--width", "16", "--n-train", "300"]


def test_list(capsys):
    assert main(["list"]) == 0
    assert "label_noise" in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    rows = {r["study"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(wb.studies()) and "flip_rate" in rows["label_noise"]["dials"]


def test_run_runs_show(capsys):
    assert main(RUN + ["--flip-rate", "0.4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and out["params"]["flip_rate"] == 0.4
    assert set(out["summary"]["test_acc"]) == {"final", "best", "best_at"}
    rid = out["id"]

    assert main(RUN + ["--flip-rate", "0.4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert rid in text and "metric" in text and "test_acc" in text  # the summary table

    assert main(["runs"]) == 0
    assert rid in capsys.readouterr().out
    assert main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == rid
    assert main(["show", rid]) == 0
    assert "flip_rate=0.4" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--flip-rate", "1.2"], "flip_rate=1.2"),
    (["--width", "0"], "width=0"),
    (["--dataset", "mnist"], "dataset='mnist'"),
    (["--transition-matrix", "[[1, 0], [0, 1]]", "--noise-kind", "matrix"], "transition_matrix"),
])
def test_bad_input_exits_2_with_the_field(capsys, data_root, args, words):
    assert main(RUN + args) == 2
    err = capsys.readouterr().err
    assert words in err and "not allowed" in err
    assert not (data_root / "runs").exists()


def test_show_unknown_and_malformed_ids(capsys):
    assert main(["show", "0123456789ab"]) == 1
    assert main(["show", "../../etc/passwd"]) == 2
    assert "run_id" in capsys.readouterr().err


def test_the_installed_command_shows_a_progress_bar(data_root):
    exe = os.path.join(os.path.dirname(sys.executable), "workbench")
    out = subprocess.run([exe] + RUN, capture_output=True, text=True, env={**os.environ,
                         "WORKBENCH_DATA": str(data_root)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2/2" in out.stderr and "epoch" in out.stderr  # tqdm
    assert "best at" in out.stdout
    bad = subprocess.run([exe, "run", "label_noise", "--width", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "width=0" in bad.stderr


def test_serve_gives_a_page_to_every_study_even_one_without_a_file_in_apps(tmp_path, monkeypatch):
    from workbench import cli

    served = [Path(p).stem for p in cli.app_files(tmp_path)]
    assert set(wb.studies()) <= set(served) and {"index", "runs"} <= set(served)
    monkeypatch.setattr(cli, "study_names", lambda: [*wb.studies(), "new_study"])
    files = cli.app_files(tmp_path)
    written = tmp_path / "new_study.py"
    assert str(written) in files and "study_page('new_study')" in written.read_text()
    compile(written.read_text(), str(written), "exec")


def test_serve_is_single_user_on_localhost_and_shared_where_other_machines_reach_it():
    from workbench import cli

    assert cli.serve_mode("localhost", False, False) is None  # each page decides: local visitors own everything
    assert cli.serve_mode("127.0.0.1", False, False) is None
    assert cli.serve_mode("0.0.0.0", False, False) == "1"
    assert cli.serve_mode("0.0.0.0", False, True) == "0"
    assert cli.serve_mode("localhost", True, False) == "1"
    with pytest.raises(wb.ConfigError, match="one of the two"):
        cli.serve_mode("localhost", True, True)
