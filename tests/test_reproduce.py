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


def test_quick_profile_writes_the_report(shared_data, tmp_path, capsys):
    """The quick profile end to end: each claim's notebook runs (or says it is full-profile only), each check that
    runs passes with its effect size, and index.html links every executed notebook and figure."""
    out = tmp_path / "reports"
    code = cli.main(["reproduce", "--profile", "quick", "--output", str(out), "--quiet", "--timeout", "600"])
    printed = capsys.readouterr().out
    results = json.loads((out / "reproduce" / "results.json").read_text())
    assert [r["key"] for r in results] == list(reproduce.CLAIMS)
    for r in results:
        claim = reproduce.CLAIMS[r["key"]]
        if claim.quick is None:
            assert r["status"] == "skipped"
            continue
        assert r["status"] == "pass", r
        assert isinstance(r["effect"], float) and r["effect_label"] and r["seeds"] == claim.quick["seeds"]
        assert (out / r["figure"]).is_file()
    page = (out / "index.html").read_text()
    for r in results:
        assert r["key"] in page
        if r["status"] != "skipped":
            assert (out / r["notebook"]).is_file() and r["notebook"] in page
    assert code == 0 and str(out / "index.html") in printed
