"""`workbench reproduce`: every claim's notebook under papermill, the quick profile, and the report."""
import json

import pytest

from workbench import cli, reproduce
from workbench.errors import ConfigError


def test_the_committed_reproduction_notebooks_are_the_generated_ones(tmp_path):
    written = reproduce.write_notebooks(tmp_path)  # `workbench notebook sync` writes them into notebooks/reproduce
    assert [p.name for p in written] == [f"{k}.ipynb" for k in reproduce.CLAIMS]
    for p in written:
        assert p.read_text() == (cli.REPO / "notebooks" / "reproduce" / p.name).read_text(), p.name
    assert not reproduce.write_notebooks(tmp_path)  # the same claims write the same files


def test_bad_claim_or_profile_is_refused():
    with pytest.raises(ConfigError) as e:
        reproduce.check("no_such_claim")
    assert e.value.field == "claim"
    with pytest.raises(ConfigError) as e:
        reproduce.check("ambient", "medium")
    assert e.value.field == "profile"
    assert cli.main(["reproduce", "--only", "early_learning,bogus", "--quiet"]) == 2


def test_a_bad_number_of_jobs_is_refused_before_any_notebook_runs(tmp_path, capsys):
    assert cli.main(["reproduce", "--only", "elr", "--jobs", "0", "--quiet", "--output", str(tmp_path)]) == 2
    assert "jobs=0" in capsys.readouterr().err and not (tmp_path / "reproduce" / "results.json").exists()


# The quick profile's claims that take seconds (or whose runs other tests store first), end to end through their
# notebooks: the whole quick profile is the slow run below; every claim's check runs on tiny settings in the default
# suite, and `edge_of_stability`, `softmax_collapse` and `perp_grad` (20 s to a minute each here: the tests that
# share their runs seldom store them first in the other test process) are checked at the same settings by
# tests/test_edge_of_stability.py and tests/test_grokking.py (`terminal_snr` and `ambient` by slow tests in
# tests/test_diffusion.py).
SHARED_QUICK = ["fp8_training", "relay_snr", "gumbel_precision", "data_diet", "noisyquant", "fp8_stability",
                "long_tail"]


@pytest.mark.parametrize("only", [pytest.param(SHARED_QUICK, id="shared"),
                                  pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_quick_profile_writes_the_report(only, shared_data, tmp_path, capsys):
    """The quick profile end to end: each claim's notebook runs, each check gives its verdict with its effect
    (mean ± sd, 95 % interval, n = its seeds), index.html links every executed notebook and figure and names the
    long claims a whole quick run leaves out, and the README's table of claims says what this run measured (a long
    claim's row what its own run measured: its quick settings alone, or the full profile)."""
    out = tmp_path / "reports"
    keys = [k for k in reproduce.claims_to_run("quick") if only is None or k in only]
    code = cli.main(["reproduce", "--profile", "quick", "--output", str(out), "--quiet", "--timeout", "600"]
                    + (["--only", ",".join(only)] if only else []))
    printed = capsys.readouterr().out
    results = json.loads((out / "reproduce" / "results.json").read_text())
    assert [r["key"] for r in results] == keys
    readme = reproduce.readme_rows((cli.REPO / "README.md").read_text())
    assert set(readme) == set(reproduce.CLAIMS), "README.md: `workbench reproduce --readme` writes its claims table"
    for r in results:
        claim = reproduce.CLAIMS[r["key"]]
        said = readme[r["key"]]
        assert said["verdict"] == reproduce.verdict(r), (r["key"], said, r["status"], r["detail"])
        assert r["status"] in ("pass", "fail"), r  # a finding not reproduced here is a result; an error is not
        assert isinstance(r["effect"], float) and r["effect_label"] and r["seeds"] == claim.quick["seeds"]
        assert r["n"] == len(claim.quick["seeds"]) and r["effect_lo"] <= r["effect"] <= r["effect_hi"]
        assert said["effect"] == pytest.approx(r["effect"], abs=max(0.01, 0.05 * abs(r["effect"]))), r["key"]
        assert "cdn.bokeh.org" not in (out / r["figure"]).read_text()  # BokehJS inline: it draws offline
        assert "cdn.holoviz.org" not in (out / r["figure"]).read_text()  # and Panel's stylesheets
        assert r["seconds"] > 0 and r["machine"], r  # how long its notebook took, and where
        assert (out / r["notebook"]).is_file()
    page = (out / "index.html").read_text()
    assert "Time: " in page and results[0]["machine"] in page
    assert all(r["key"] in page and r["notebook"] in page for r in results)
    measured = {reproduce.verdict({"status": s, "profile": p}) for s in ("pass", "fail") for p in reproduce.PROFILES}
    for key in set(reproduce.CLAIMS) - set(reproduce.claims_to_run("quick")):
        assert readme[key]["verdict"] in measured and readme[key]["effect"] is not None, key
        if only is None:  # no full-profile results in this fresh folder: the page says how to run the claim
            assert f"reproduce --only {key}`" in page
    assert code == 0 and str(out / "index.html") in printed


def test_the_readme_table_updates_only_the_claims_rerun(tmp_path):
    keep = "| `elr` | Liu et al. 2020 | **reproduced** | +0.205: kept as it was |"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{reproduce.TABLE_START}\n| claim | paper | verdict | effect as measured |\n|---|---|---|---|\n"
                      f"| `retired_claim` | Someone | **reproduced** | +1 |\n{keep}\n{reproduce.TABLE_END}\noutro\n")
    rerun = {"key": "early_learning", "paper": "Arpit", "status": "fail", "effect": 0.01, "effect_sd": 0.002, "n": 3,
             "effect_lo": 0.005, "effect_hi": 0.015, "effect_label": "peak − final"}
    assert reproduce.write_readme(readme, [rerun])
    text = readme.read_text()
    rows = reproduce.readme_rows(text)
    assert list(rows) == ["early_learning", "elr"]  # the registry's order; a claim no longer registered goes
    assert rows["early_learning"] == {"verdict": "not reproduced here", "effect": 0.01} and keep in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert not reproduce.write_readme(readme, [rerun])  # nothing new: unchanged


def _result(key, profile, status, effect=None, seconds=None, machine="cpu, 2 cores"):
    """A claim's result as a report folder's results.json keeps it."""
    return {"key": key, "profile": profile, "status": status, "effect": effect, "seconds": seconds,
            "machine": machine, "paper": "P", "effect_label": "e", "effect_sd": 0.01, "n": 5, "effect_lo": 0.0,
            "effect_hi": 1.0}


def test_the_profiles_table_says_each_profiles_verdict_effect_and_time(tmp_path):
    """`--readme` writes the table of both profiles whole from every result the report folder holds: per claim the
    quick verdict and time, the full verdict, effect and time, '—' where a profile has not run it, a long claim
    never run at the quick profile as left out, and each profile's count and time added up."""
    readme = tmp_path / "README.md"
    readme.write_text(f"{reproduce.TABLE_START}\n{reproduce.TABLE_END}\n{reproduce.PROFILES_START}\nold\n"
                      f"{reproduce.PROFILES_END}\nafter\n")
    kept = [_result("elr", "quick", "pass", 0.2, 30.0), _result("elr", "full", "fail", 0.05, 150.0),
            _result("ambient", "full", "pass", 1.5, 1200.0, machine="H100"), _result("dropout", "full", "error")]
    assert reproduce.write_readme(readme, kept[:1], kept)
    text = readme.read_text()
    rows = reproduce.profiles_rows(text)
    assert set(rows) == set(reproduce.CLAIMS) and "old" not in text and text.endswith("after\n")
    assert rows["elr"] == {"quick": "reproduced", "full": "not reproduced here"}
    assert rows["ambient"] == {"quick": "left out (long)", "full": "reproduced"}
    assert rows["dropout"] == {"quick": "—", "full": "error"} and rows["noisyquant"] == {"quick": "—", "full": "—"}
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 30 s |" in lines["`elr`"] and "+0.050 ± 0.010 (n=5) | 2.5 min |" in lines["`elr`"]
    assert "| 20.0 min (H100) |" in lines["`ambient`"]  # a time from another machine than its profile's names it
    assert lines["all"] == "| all | 1 of 1 reproduced | 30 s | 1 of 3 reproduced | | 22.5 min |"
    assert "Machines: quick profile: cpu, 2 cores; full profile: cpu, 2 cores." in text
    assert reproduce.profiles_rows(text.replace(reproduce.PROFILES_END, "")) == {}
    other = tmp_path / "other.md"
    other.write_text(f"{reproduce.TABLE_START}\n{reproduce.TABLE_END}\n")
    with pytest.raises(ConfigError, match="profiles table"):  # a README without its markers: said, not guessed
        reproduce.write_readme(other, [], kept)
    assert other.read_text() == f"{reproduce.TABLE_START}\n{reproduce.TABLE_END}\n"  # and left as it was


def test_reproduce_readme_writes_both_tables_from_the_report_folder(tmp_path, monkeypatch, capsys):
    """`workbench reproduce --only elr --readme`: the README's claims table gets the claim just run and the long
    claims' full-profile rows the quick report shows, its profiles table every result the folder holds (the
    notebooks' runner is replaced here: test_quick_profile_writes_the_report runs it)."""
    out, repo = tmp_path / "out", tmp_path / "repo"
    (out / "reproduce").mkdir(parents=True)
    repo.mkdir()
    (repo / "README.md").write_text(f"{reproduce.TABLE_START}\n{reproduce.TABLE_END}\n{reproduce.PROFILES_START}\n"
                                    f"{reproduce.PROFILES_END}\n")
    ran = _result("elr", "quick", "pass", 0.2, 30.0)
    kept = [ran, _result("ambient", "full", "fail", 2.7, 1150.0)]
    (out / "reproduce" / "results.json").write_text(json.dumps(kept))

    def run_all(profile, folder, notebooks, kernel, keys, **kw):
        assert (profile, keys) == ("quick", ["elr"])
        return [ran], folder / "index.html"

    monkeypatch.setattr(reproduce, "run_all", run_all)
    monkeypatch.setattr(cli, "ensure_kernel", lambda name: name)
    monkeypatch.setattr(cli, "REPO", repo)
    assert cli.main(["reproduce", "--only", "elr", "--readme", "--quiet", "--output", str(out)]) == 0
    assert "the claims and profiles tables updated" in capsys.readouterr().out
    text = (repo / "README.md").read_text()
    claims, profiles = reproduce.readme_rows(text), reproduce.profiles_rows(text)
    assert {k: v["verdict"] for k, v in claims.items()} == {"elr": "reproduced",
                                                            "ambient": "not reproduced here (full profile)"}
    assert profiles["elr"] == {"quick": "reproduced", "full": "—"}
    assert profiles["ambient"] == {"quick": "left out (long)", "full": "not reproduced here"}


def test_the_readmes_two_tables_agree():
    """The claims table says each claim's quick verdict, or a long claim's full one marked as such; the profiles
    table under it says the same, and both list every registered claim."""
    text = (cli.REPO / "README.md").read_text()
    claims, profiles = reproduce.readme_rows(text), reproduce.profiles_rows(text)
    assert set(claims) == set(profiles) == set(reproduce.CLAIMS)
    for key, said in claims.items():
        at = "full" if said["verdict"].endswith(" (full profile)") else "quick"
        assert profiles[key][at] == said["verdict"].removesuffix(" (full profile)"), (key, said, profiles[key])


def test_a_bar_in_a_label_stays_inside_its_cell():
    r = {"key": "elr", "paper": "A | B 2020", "status": "pass", "effect": 0.5, "effect_sd": 0.1, "n": 3,
         "effect_lo": 0.3, "effect_hi": 0.7, "effect_label": "mean |x − y|"}
    row = reproduce._row(r)
    assert row.replace("\\|", "").count("|") == 5  # four cells, however many bars the texts hold
    said = reproduce.readme_rows(f"{reproduce.TABLE_START}\n{row}\n{reproduce.TABLE_END}")
    assert said == {"elr": {"verdict": "reproduced", "effect": 0.5}}


def _claim_notebook(folder, key: str, code: str) -> None:
    """A stand-in for a claim's notebook: the parameters cell `workbench reproduce` fills, then `code`."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "workbench", "language": "python",
                                                           "display_name": "workbench"}})
    nb.cells = [nbformat.v4.new_code_cell("profile = 'quick'\nresult_path = figure_path = ''",
                                          metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, folder / f"{key}.ipynb")


def test_a_failing_notebook_is_an_error_and_the_next_one_still_runs(shared_data, tmp_path):
    """The notebooks share one kernel: a cell's exception is that claim's error, and the next notebook runs."""
    import shutil

    folder = tmp_path / "notebooks"
    folder.mkdir()
    _claim_notebook(folder, "early_learning", "raise ValueError('a broken check')")
    shutil.copy(cli.REPO / "notebooks" / "reproduce" / "noisyquant.ipynb", folder)
    results, index = reproduce.run_all("quick", tmp_path / "out", folder, cli.ensure_kernel("workbench"),
                                       keys=["early_learning", "noisyquant"], timeout=300,
                                       progress=False)
    broken, fine = results
    assert broken["status"] == "error" and "ValueError: a broken check" in broken["detail"]
    assert fine["status"] in ("pass", "fail") and fine["n"] == len(reproduce.CLAIMS["noisyquant"].quick["seeds"])
    assert "a broken check" in index.read_text()

    # one claim run again: the report keeps the other's result at this profile, in the registry's order, and the
    # results of the other profile (a full-profile run of one claim no longer wiped the quick report)
    path = tmp_path / "out" / "reproduce" / "results.json"
    stored = json.loads(path.read_text())
    full_elr = dict(fine, key="elr", profile="full", detail="measured at full settings")
    full_ambient = dict(fine, key="ambient", profile="full", status="pass", detail="ambient at full settings")
    stored += [dict(fine, key="retired_claim"), full_elr, full_ambient]
    path.write_text(json.dumps(stored))
    again, index = reproduce.run_all("quick", tmp_path / "out", folder, cli.ensure_kernel("workbench"),
                                     keys=["early_learning"], timeout=300, progress=False)
    assert [r["key"] for r in again] == ["early_learning"]
    kept = json.loads(path.read_text())
    assert [(r["key"], r["profile"]) for r in kept] == [("early_learning", "quick"), ("noisyquant", "quick"),
                                                        ("ambient", "full"), ("elr", "full")]  # not the retired one
    assert kept[1]["detail"] == fine["detail"] and kept[1]["seconds"] == fine["seconds"] and kept[3] == full_elr
    page = index.read_text()
    assert "a broken check" in page and fine["detail"][:40] in page and "measured at full settings" not in page
    # the long claims a whole quick run leaves out: by their full-profile result where the folder holds one, else
    # how to run them
    assert "reproduced (full profile)" in page and "ambient at full settings" in page
    assert "not run (long)" in page and "reproduce --only mdm_sampling_precision`" in page
    assert "(1 of them, long claims a whole quick run leaves out, at the full profile)" in page
    rows = reproduce.readme_results(again, "quick", reproduce.stored(tmp_path / "out"))  # what `--readme` writes: the page's rows
    assert [(r["key"], r["profile"]) for r in rows] == [("early_learning", "quick"), ("ambient", "full")]
    assert reproduce.verdict(rows[1]) == "reproduced (full profile)"
    assert 'href="full.html"' in page and "measured at full settings" in (tmp_path / "out" / "full.html").read_text()
    assert again[0]["notebook"] == "reproduce/early_learning-quick.html"  # each profile's notebook of its own


def test_claims_run_in_parallel_kernels_with_a_share_of_the_cores_each(tmp_path):
    """--jobs 2: two kernels take the claims in turn, the longest (by the folder's last times) first; each kernel
    gets half the cores; the results come back in the order asked and say they shared the machine."""
    import os

    folder = tmp_path / "notebooks"
    folder.mkdir()
    keys = ["early_learning", "elr", "dropout"]
    for key in keys:  # each notebook says which kernel ran it and the threads it was given, as its "error"
        _claim_notebook(folder, key, "import os\nraise ValueError(f\"{os.getpid()} {os.environ['OMP_NUM_THREADS']}\")")
    earlier = tmp_path / "earlier"
    (earlier / "reproduce").mkdir(parents=True)
    (earlier / "reproduce" / "results.json").write_text(json.dumps([
        {"key": "elr", "profile": "quick", "seconds": 5.0}, {"key": "dropout", "profile": "quick", "seconds": 50.0},
        {"key": "early_learning", "profile": "full", "seconds": 500.0}]))
    assert reproduce._longest_first(keys, earlier, "quick") == \
        ["early_learning", "dropout", "elr"]  # never timed here at this profile first, then the longest
    out = tmp_path / "out"
    results, index = reproduce.run_all("quick", out, folder, cli.ensure_kernel("workbench"), keys=keys,
                                       timeout=120, progress=False, jobs=2)
    assert [r["key"] for r in results] == keys
    said = [r["detail"].removeprefix("ValueError: ").split() for r in results]
    assert len({pid for pid, _ in said}) == 2, said  # two kernels
    assert {threads for _, threads in said} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert all(r["status"] == "error" and r["machine"].endswith("2 claims at a time") for r in results)
    assert "2 claims at a time" in index.read_text() and "added up: some ran at the same time" in index.read_text()
    with pytest.raises(ConfigError, match="jobs"):
        reproduce.run_all("quick", out, folder, "workbench", keys=keys, jobs=0)
    from jupyter_client.kernelspec import NoSuchKernel

    with pytest.raises(NoSuchKernel):  # a kernel that cannot start stops the run, in whichever thread it failed
        reproduce.run_all("quick", out, folder, "no_such_kernel", keys=keys, progress=False, jobs=2)
    assert [r["key"] for r in json.loads((out / "reproduce" / "results.json").read_text())] == keys  # kept


def test_each_claims_result_is_kept_as_soon_as_it_is_known(tmp_path):
    """A long run that is stopped keeps the claims it finished: results.json and index.html are rewritten after
    every claim (the second notebook finds the first's result there)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    out = tmp_path / "out"
    code = {"early_learning": "raise ValueError('first')",
            "elr": "import json\nraise ValueError([r['key'] for r in json.loads(open(" +
                   repr(str(out / "reproduce" / "results.json")) + ").read())])"}
    for key, text in code.items():
        _claim_notebook(folder, key, text)
    results, index = reproduce.run_all("quick", out, folder, cli.ensure_kernel("workbench"), keys=list(code),
                                       timeout=120, progress=False)
    assert results[1]["detail"] == "ValueError: ['early_learning']"
    assert not list(out.rglob(".*.tmp"))  # every file renamed into place


def test_a_run_says_how_long_its_claims_took_last_time(tmp_path):
    """Long work says what to expect: the claims' times from the report folder's last results at that profile."""
    folder = tmp_path / "reproduce"
    folder.mkdir()
    assert reproduce.expected(tmp_path, ["elr"], "quick") == ""  # nothing run here yet
    (folder / "results.json").write_text(json.dumps([
        {"key": "elr", "profile": "quick", "seconds": 120.0, "machine": "2 CPU cores"},
        {"key": "dropout", "profile": "quick", "seconds": 60.0, "machine": "2 CPU cores"},
        {"key": "regret", "profile": "full", "seconds": 6000.0, "machine": "2 CPU cores"}]))
    said = reproduce.expected(tmp_path, ["elr", "dropout", "regret"], "quick")
    assert said == "reproduce (quick): 3 claims to run; 2 of them ran here before, in about 3 min (2 CPU cores)"
    assert reproduce.expected(tmp_path, ["regret"], "quick") == ""  # only a full-profile time: not this profile's
    assert reproduce.expected(tmp_path, ["dropout"], "quick").endswith("1 claim to run; it ran here before, in about "
                                                                       "60 s (2 CPU cores)")


def test_a_runs_last_finite_value_and_where_a_rising_curve_crosses_a_level():
    import numpy as np

    a = np.array([[1.0, 2.0, np.nan, np.nan], [np.nan] * 4, [1.0, 2.0, 3.0, 4.0]])
    assert np.array_equal(reproduce._last_finite(a), [2.0, np.nan, 4.0], equal_nan=True)
    xs, ys = np.array([0.1, 1.0, 10.0]), np.array([0.01, 0.1, 1.0])  # y = x / 10: a straight line in log-log
    assert np.isclose(reproduce._rise_crossing(xs, ys, 0.3), 3.0)
    assert np.isnan(reproduce._rise_crossing(xs, ys, 2.0)) and np.isnan(reproduce._rise_crossing(xs, ys, 0.001))


def test_a_whole_quick_run_leaves_out_the_long_claims_only():
    long = {k for k, c in reproduce.CLAIMS.items() if c.long}
    assert long and reproduce.claims_to_run("full") == list(reproduce.CLAIMS)  # the full profile runs every claim
    assert reproduce.claims_to_run("quick") == [k for k in reproduce.CLAIMS if k not in long]
    assert reproduce.claims_to_run("quick", ["ambient"]) == ["ambient"]  # named, a long claim runs at quick settings
    said = reproduce.expected(cli.REPO / "no_such_folder", None, "quick")
    assert said == ""  # nothing ran there yet
