"""The store under faults: a finished result survives any later attempt, a lost or damaged catalog is rebuilt from
the files, a damaged file is detected and never served, a full disk or a read-only folder fails cleanly, paths stay
inside the store, and two identical sweeps at once share their work."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import xarray as xr

import workbench as wb
from workbench.cli import main as cli
from workbench.engine.events import PartStored, TaskStarted

from .conftest import FAST


def cancel_after(epochs: int):
    """A cancel event set once the run has recorded `epochs` epochs, and the sink that sets it."""
    ev = threading.Event()
    return ev, lambda rec: ev.set() if rec.get("epoch", 0) >= epochs else None


# -- a finished result is never lost ------------------------------------------------------------------------------
def test_a_cancelled_recompute_keeps_the_finished_run(store):
    done = wb.run("label_noise", store=store, progress=False, **{**FAST, "epochs": 5})
    before = done.path.read_bytes()
    ev, sink = cancel_after(2)
    attempt = wb.run("label_noise", store=store, progress=False, force=True, cancel=ev, sinks=[sink],
                     **{**FAST, "epochs": 5})
    assert attempt.id == done.id and attempt.status == "cancelled" and attempt.attempt == 1
    assert len(attempt.ds.epoch) < 6  # the attempt's own partial curves
    kept = store.get(done.id)
    assert kept["status"] == "done" and done.path.read_bytes() == before  # the result, untouched
    assert wb.load(done.id, store=store).ds.sizes["epoch"] == 6
    assert [a["status"] for a in store.attempts(done.id)] == ["cancelled"]
    again = wb.run("label_noise", store=store, progress=False, **{**FAST, "epochs": 5})
    assert again.status == "done" and again.meta["sha256"] == kept["sha256"]  # the cache still answers


def test_a_failed_recompute_keeps_the_finished_run(store, monkeypatch):
    from workbench.studies.label_noise import LabelNoise

    done = wb.run("label_noise", store=store, progress=False, **FAST)

    def broken(self, ctx):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(LabelNoise, "execute", broken)
    failed = wb.run("label_noise", store=store, progress=False, force=True, **FAST)
    assert failed.status == "failed" and "out of memory" in failed.error and failed.attempt == 1
    assert store.get(done.id)["status"] == "done"


def test_a_successful_recompute_moves_the_old_result_to_the_attempts(store):
    first = wb.run("label_noise", store=store, progress=False, **FAST)
    old = first.path.read_bytes()
    second = wb.run("label_noise", store=store, progress=False, force=True, **FAST)
    assert second.status == "done" and second.attempt is None
    (kept,) = store.attempts(first.id)
    assert kept["status"] == "done" and kept["sha256"] == first.meta["sha256"]
    assert store.file(kept).read_bytes() == old
    xr.testing.assert_identical(first.ds.drop_attrs(), second.ds.drop_attrs())  # the old Run still reads its own
    store.delete(first.id)  # delete takes the attempts with it
    assert not list(store.root.rglob("*.nc")) and store.attempts(first.id) == []


def test_a_cancelled_forced_sweep_keeps_the_finished_sweep(store):
    grid, kw = {"flip_rate": [0.0, 0.4], "width": [16, 24]}, dict(epochs=3, n_train=300)
    done = wb.sweep("label_noise", grid=grid, seeds=[0], store=store, progress=False, **kw)
    ev = threading.Event()
    attempt = wb.sweep("label_noise", grid=grid, seeds=[0], store=store, progress=False, force=True, cancel=ev,
                       sinks=[lambda e: ev.set() if isinstance(e, PartStored) else None], **kw)
    assert attempt.status == "cancelled" and attempt.attempt == 1
    assert store.get(done.id)["status"] == "done"
    xr.testing.assert_identical(wb.load(done.id, store=store).ds.drop_attrs(), done.ds.drop_attrs())


# -- the catalog --------------------------------------------------------------------------------------------------
def test_a_lost_catalog_is_rebuilt_from_the_files(store):
    a = wb.run("label_noise", store=store, progress=False, tags=["baseline"], **FAST)
    b = wb.sweep("label_noise", grid={"flip_rate": [0.0, 0.4]}, seeds=[0], store=store, progress=False, **FAST)
    before = {r["id"]: r for r in store.list()}
    for p in store.root.glob("catalog.sqlite*"):
        p.unlink()
    after = {r["id"]: r for r in wb.Store(store.root).list()}  # recovered on first use, nothing to type
    assert set(after) == {a.id, b.id}
    for rid, row in before.items():
        for k in ("study", "kind", "status", "params", "code", "data", "tags", "sha256", "size", "path"):
            assert after[rid][k] == row[k], (rid, k)
    assert wb.load(a.id, store=wb.Store(store.root)).ds.sizes["epoch"] == 4


def test_a_damaged_catalog_is_rebuilt_and_kept_aside(store, capsys):
    run = wb.run("label_noise", store=store, progress=False, **FAST)
    store.catalog.write_bytes(b"this is not a database" * 100)
    for side in ("-wal", "-shm"):
        store.catalog.with_name(store.catalog.name + side).unlink(missing_ok=True)
    assert wb.Store(store.root).get(run.id)["status"] == "done"
    assert list(store.root.glob("catalog.sqlite.damaged-*"))
    assert cli(["catalog", "rebuild"]) == 0
    assert "1 runs, 0 attempts" in capsys.readouterr().out


def test_a_row_with_bad_json_does_not_break_the_listing(store, capsys):
    good = wb.run("label_noise", store=store, progress=False, **FAST)
    bad = wb.run("label_noise", store=store, progress=False, **{**FAST, "width": 16})
    with sqlite3.connect(store.catalog) as con:
        con.execute("UPDATE runs SET params = '{not json' WHERE id = ?", (bad.id,))
    rows = {r["id"]: r for r in store.list()}
    assert rows[good.id]["params"]["width"] == 32
    assert rows[bad.id]["params"] == {} and "params is not JSON" in rows[bad.id]["error"]
    assert cli(["runs"]) == 0
    out = capsys.readouterr().out
    assert good.id in out and bad.id in out
    from workbench.viz.browser import Catalog

    assert {r["id"] for r in Catalog(store).rows()} == {good.id, bad.id}


def test_a_truncated_file_is_detected_never_served_or_exported(store, capsys):
    from workbench.viz.browser import netcdf_zip

    run = wb.run("label_noise", store=store, progress=False, **FAST)
    data = run.path.read_bytes()
    run.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(wb.RunNotFound, match="truncated"):
        wb.load(run.id, store=store).ds
    with pytest.raises(wb.RunNotFound, match="truncated"):
        netcdf_zip(store, [run.id])
    assert cli(["catalog", "check"]) == 1
    assert "1 damaged or missing" in capsys.readouterr().out
    again = wb.run("label_noise", store=store, progress=False, **FAST)  # not the cached result: computed again
    assert again.path.read_bytes() != data[: len(data) // 2] and not store.check(store.get(run.id))
    same_size = bytearray(again.path.read_bytes())
    same_size[len(same_size) // 2] ^= 0xFF  # one flipped byte: the size is right, the checksum is not
    again.path.write_bytes(bytes(same_size))
    with pytest.raises(wb.RunNotFound, match="SHA-256 differs"):
        wb.load(run.id, store=store).ds


def test_a_catalog_path_outside_the_store_is_refused(store, tmp_path):
    run = wb.run("label_noise", store=store, progress=False, **FAST)
    victim = tmp_path / "victim.nc"
    victim.write_text("keep me")
    with sqlite3.connect(store.catalog) as con:
        con.execute("UPDATE runs SET path = ? WHERE id = ?", (os.path.relpath(victim, store.root), run.id))
    with pytest.raises(wb.StoreError, match="not a run file inside"):
        store.delete(run.id)
    assert victim.read_text() == "keep me" and store.get(run.id) is not None
    with pytest.raises(wb.RunNotFound, match="not a run file inside"):
        wb.load(run.id, store=store).ds


# -- storage faults -----------------------------------------------------------------------------------------------
FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import workbench as wb
    wb.run("label_noise", epochs=2, width=16, n_train=200, progress=False)  # the catalog and one run fit
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then files may not grow past what is there: a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    wb.run("label_noise", epochs=20, width=16, n_train=1500, loss_snapshots=20, progress=False)  # > 0.1 MB
""")


def test_a_full_disk_fails_cleanly_and_keeps_what_was_stored(data_root):
    """A real write fault from the kernel (RLIMIT_FSIZE: no file may grow past a limit, EFBIG like ENOSPC), no
    mount needed: the catalog fits, the second run's file does not. The process must not crash in libhdf5; the
    run is refused with a clear error, nothing partial."""
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "100000"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WORKBENCH_DATA": str(data_root)})
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # an exception, not a signal (-11, 139)
    assert "StoreError" in proc.stderr and "the disk is full" in proc.stderr, proc.stderr[-2000:]
    store = wb.Store(data_root)
    (row,) = store.list()  # the first run only, whole
    assert row["params"]["width"] == 16 and not store.check(row)
    assert not list(data_root.rglob("*.tmp")) and len(list(data_root.rglob("*.nc"))) == 1


def test_the_cli_says_a_full_disk_in_words(data_root):
    """Here the catalog itself cannot grow (its shared-memory file is 32 KB): SQLite's own error, diagnosed."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from workbench.cli import main
        main(["run", "label_noise", "--epochs", "2", "--width", "16", "--n-train", "200"])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        sys.exit(main(["run", "label_noise", "--epochs", "2", "--width", "256", "--n-train", "200"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WORKBENCH_DATA": str(data_root)})
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "workbench: error: cannot write" in proc.stderr and "the disk is full" in proc.stderr
    assert "Traceback" not in proc.stderr


def immutable(paths, on: bool) -> bool:
    """chattr ±i: an immutable folder takes no new file and an immutable file no write, even from root (who
    ignores permission bits): a read-only store with no mount needed."""
    flag = "+i" if on else "-i"
    proc = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return proc.returncode == 0


def test_a_read_only_folder_still_reads_and_refuses_writes_clearly(store, capsys):
    run = wb.run("label_noise", store=store, progress=False, **FAST)
    paths = [store.root, *store.root.rglob("*")]
    if shutil.which("chattr") is None or not immutable(paths, True):
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    try:
        ro = wb.Store(store.root)
        assert [r["id"] for r in ro.list()] == [run.id]
        assert wb.load(run.id, store=ro).ds.sizes["epoch"] == 4
        assert cli(["show", run.id]) == 0 and cli(["runs"]) == 0
        assert run.id in capsys.readouterr().out
        with pytest.raises(wb.StoreError, match="cannot be written.*reading still works"):
            wb.run("label_noise", store=ro, progress=False, **{**FAST, "width": 16})
        assert cli(["run", "label_noise", "--epochs", "2", "--width", "16"]) == 1
        assert "cannot be written" in capsys.readouterr().err
    finally:
        immutable(paths, False)
    assert [r["id"] for r in store.list()] == [run.id]  # and nothing half-written when it is writable again
    assert not list(store.root.rglob("*.tmp"))


# -- sweeps -------------------------------------------------------------------------------------------------------
def test_two_identical_sweeps_at_once_share_the_work(store, tmp_path):
    grid = {"width": [8, 16, 24, 32]}
    kw = dict(seeds=[0, 1], epochs=6, n_train=300, progress=False)
    started, results, errors = [], [], []

    def one():
        try:
            results.append(wb.sweep("label_noise", grid=grid, store=wb.Store(store.root),
                                    sinks=[lambda e: started.append(e.task) if isinstance(e, TaskStarted) else None],
                                    **kw))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(started) == [0, 1, 2, 3]  # every task trained once, by one of the two
    alone = wb.sweep("label_noise", grid=grid, store=wb.Store(tmp_path / "alone"), **kw)
    for r in results:
        assert r.status == "done"
        xr.testing.assert_identical(r.ds.drop_attrs(), alone.ds.drop_attrs())


def test_stale_temp_files_are_cleared_and_live_ones_kept(store):
    run = wb.run("label_noise", store=store, progress=False, **FAST)
    folder = run.path.parent
    stale, live = folder / ".old.1234.tmp", folder / ".new.5678.tmp"
    for p in (stale, live):
        p.write_bytes(b"torn")
    os.utime(stale, (1, 1))
    assert store.clear_temp() == 1 and not stale.exists() and live.exists()


def test_a_claim_of_a_dead_process_is_taken_over(store):
    from workbench.runs.sweep import _claim

    part = store.root / "sweeps" / "label_noise" / "x" / "part-1.nc"
    with _claim(part) as first:
        assert first
        with _claim(part) as second:  # held by a live process (this one)
            assert not second
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    part.with_suffix(".claim").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename,
                                                      "token": "x"}))
    with _claim(part) as taken:
        assert taken
    assert not part.with_suffix(".claim").exists()


# -- kill -9 at random points -------------------------------------------------------------------------------------
KILLED = textwrap.dedent("""
    import os, sys
    import workbench as wb

    def work():  # until killed: the sweep (resuming), a run, and a forced recompute of that run
        for trial in range(1000):
            wb.sweep("label_noise", grid={"width": [8, 16, 24, 32]}, seeds=[0, 1], epochs=10, n_train=300,
                     progress=False)
            wb.run("label_noise", epochs=10, width=16, n_train=300, progress=False, force=trial > 0)

    # a fork server: workbench and torch imported once, each trial a forked child that the test kills
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            work()
            os._exit(0)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")
TRIALS = int(os.environ.get("WORKBENCH_FAULT_TRIALS", "20"))


def test_kill_9_at_random_points_loses_nothing(data_root, tmp_path):
    """TRIALS processes (forked from one that imported workbench) killed with SIGKILL at random moments (a seeded
    draw, the same every time) while they sweep, run and recompute into one store. After every kill: the catalog reads, every stored row's file is whole
    (size and SHA-256), a run once finished stays finished; at the end the resumed sweep equals an uninterrupted
    one. The counts land in data/reports/faults.json."""
    import random
    import signal
    import time

    from .served import REPO

    rng = random.Random(17)

    def check(counts, finished):
        store = wb.Store(data_root)
        for row in store.list():
            counts["rows_checked"] += 1
            assert store.check(row) == "", row
            counts["rows_intact"] += 1
            if row["status"] in ("done", "diverged"):
                finished[row["id"]] = row["sha256"]
        for rid in finished:
            row = store.get(rid)
            if row is None or row["status"] not in ("done", "diverged"):
                counts["finished_runs_lost"] += 1

    counts = {"trials": TRIALS, "kills": 0, "exited_before_kill": 0, "rows_checked": 0, "rows_intact": 0,
              "finished_runs_lost": 0, "sweep_parts_seen": 0}
    finished: dict[str, str] = {}  # id -> sha256 of a result once seen finished
    server = subprocess.Popen([sys.executable, "-c", KILLED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env={**os.environ, "WORKBENCH_DATA": str(data_root)},
                              text=True)
    try:
        for _ in range(TRIALS):
            server.stdin.write("go\n")
            server.stdin.flush()
            child = int(server.stdout.readline())
            time.sleep(rng.uniform(0.05, 2.0))
            try:
                os.kill(child, signal.SIGKILL)
                counts["kills"] += 1
            except ProcessLookupError:
                counts["exited_before_kill"] += 1
            assert server.stdout.readline().strip() == "reaped"
            check(counts, finished)
            counts["sweep_parts_seen"] += len(list(data_root.glob("sweeps/*/*/part-*.nc")))
    finally:
        server.kill()
        server.wait(30)
    counts["attempts_kept"] = sum(len(wb.Store(data_root).attempts(rid)) for rid in finished)
    out = REPO / "data" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(counts, indent=2) + "\n")
    assert counts["finished_runs_lost"] == 0, counts
    assert counts["kills"] >= TRIALS // 2, counts  # the draw killed most of them mid-work
    kw = dict(grid={"width": [8, 16, 24, 32]}, seeds=[0, 1], epochs=10, n_train=300, progress=False)
    resumed = wb.sweep("label_noise", store=wb.Store(data_root), **kw)
    fresh = wb.sweep("label_noise", store=wb.Store(tmp_path / "fresh"), **kw)
    xr.testing.assert_identical(resumed.ds.drop_attrs(), fresh.ds.drop_attrs())
