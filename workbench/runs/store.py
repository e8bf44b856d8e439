"""The store: one netCDF file per run under <root>/runs/<study>/, and a SQLite catalog <root>/catalog.sqlite.

Files are written atomically (temp file in the same folder, fsync, rename) so a killed process never leaves a
half-written result; the catalog row is written after the file, with the file's size and SHA-256.

A finished result is never lost: the catalog's row for an id is its result; an attempt that then ends cancelled
or failed (a forced recompute stopped half-way) is kept beside it as an attempt (`<id>.attempt-N.nc`, table
`attempts`) and the result stays; a new finished result replaces it only after moving it to the attempts. Each
file carries its full metadata, so a lost or damaged catalog is rebuilt from the files (`Store.rebuild`,
`workbench catalog rebuild`, and on its own when the catalog cannot be read).
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

import xarray as xr

from ..errors import ConfigError, RunNotFound, StoreError

log = logging.getLogger("workbench")

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
TAG = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
STATUSES = ("done", "diverged", "failed", "cancelled")
FINISHED = ("done", "diverged")  # results: never replaced by an attempt that ends otherwise
_COLUMNS = ("id", "study", "kind", "status", "params", "created", "finished", "wall_s", "path", "error", "step",
            "device", "tags", "code", "data", "size", "sha256", "owner")
STALE_S = 3600.0  # a temp file untouched this long belongs to a writer that died
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, study TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'run', status TEXT NOT NULL,
    params TEXT NOT NULL,
    created TEXT, finished TEXT, wall_s REAL, path TEXT NOT NULL, error TEXT, step INTEGER,
    device TEXT, tags TEXT NOT NULL DEFAULT '', code TEXT NOT NULL DEFAULT '', data TEXT NOT NULL DEFAULT '{}',
    size INTEGER, sha256 TEXT, owner TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study, status);
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT NOT NULL, attempt INTEGER NOT NULL, study TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'run',
    status TEXT NOT NULL, params TEXT NOT NULL, created TEXT, finished TEXT, wall_s REAL, path TEXT NOT NULL,
    error TEXT, step INTEGER, device TEXT, tags TEXT NOT NULL DEFAULT '', code TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}', size INTEGER, sha256 TEXT, owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, attempt)
);
"""
# columns added after the first release: an older catalog gains them (with these defaults), keeping its rows
_ADDED = {"kind": "TEXT NOT NULL DEFAULT 'run'", "step": "INTEGER", "device": "TEXT",
          "tags": "TEXT NOT NULL DEFAULT ''", "code": "TEXT NOT NULL DEFAULT ''", "data": "TEXT NOT NULL DEFAULT '{}'",
          "size": "INTEGER", "sha256": "TEXT", "owner": "TEXT NOT NULL DEFAULT ''"}
ATTEMPT_FILE = re.compile(r"^([0-9a-f]{12})\.attempt-(\d+)\.nc$")


def default_root(source: Path | None = None) -> Path:
    """$WORKBENCH_DATA, else the source checkout's data/ folder (run from a clone), else the user's data directory
    (~/.local/share/noise-workbench on Linux): a pip-installed copy keeps one catalog wherever it is run from."""
    env = os.environ.get("WORKBENCH_DATA")
    if env:
        return Path(env).expanduser()
    repo = Path(source or __file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "workbench").is_dir():
        return repo / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir("noise-workbench", appauthor=False))


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ConfigError("run_id", run_id, "12 lowercase hex digits, as printed by `workbench runs`")
    return run_id


def check_tags(tags) -> list[str]:
    """Tags as a list: each 1-40 letters, digits, '_', '.', '-' (a comma-separated string is split)."""
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    for t in tags:
        if not isinstance(t, str) or not TAG.match(t):
            raise ConfigError("tag", t, "1-40 letters, digits, '_', '.' or '-'")
    return sorted(set(tags))


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.catalog = self.root / "catalog.sqlite"

    # -- catalog --------------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """The catalog, ready: created (and rebuilt from the run files, if there are any) when missing, rebuilt
        when SQLite cannot read it, gaining the columns of later releases."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _store_error(e, self.root) from e
        if not self.catalog.exists() and any(self._files()):
            log.warning("no catalog in %s but run files: rebuilding it from them", self.root)
            self.rebuild()
        try:
            return self._open(self.catalog)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and not _damaged(e):
                raise _store_error(e, self.catalog) from e
            log.warning("the catalog %s cannot be read (%s): rebuilding it from the run files", self.catalog, e)
            self.rebuild()
            return self._open(self.catalog)

    @staticmethod
    def _open(path: Path, wal: bool = True) -> sqlite3.Connection:
        con = sqlite3.connect(path, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            if wal and con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            for table in ("runs", "attempts"):
                have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                for name, decl in _ADDED.items():
                    if name not in have:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            return con
        except BaseException:
            con.close()
            raise

    def _read(self, sql: str, args=()) -> list[dict]:
        """Rows of a query; a store that cannot be written (a read-only folder) is still read."""
        try:
            con = self._connect()
        except StoreError:
            if not self.catalog.exists():
                raise
            # nobody writes a folder that cannot be written: read it as it is, without the WAL's lock files
            con = sqlite3.connect(f"file:{self.catalog}?mode=ro&immutable=1", uri=True, timeout=30)
            con.row_factory = sqlite3.Row
        with closing(con):
            return [_row(r) for r in con.execute(sql, args).fetchall()]

    def get(self, run_id: str) -> dict | None:
        check_run_id(run_id)
        if not self.catalog.exists() and not any(self._files()):
            return None
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    def cached(self, run_id: str, statuses=FINISHED) -> dict | None:
        """The stored result of `run_id` if it ended in one of `statuses` and its file is whole (its size as
        written), else None: what a run or sweep returns instead of computing."""
        meta = self.get(run_id)
        if not meta or meta["status"] not in statuses:
            return None
        problem = self.check(meta, full=False)
        if problem:
            log.warning("the stored result of %s is not used: %s", run_id, problem)
            return None
        return meta

    def attempts(self, run_id: str) -> list[dict]:
        """The attempts kept beside a run's result (cancelled or failed ones, and replaced results), oldest first."""
        check_run_id(run_id)
        if not self.catalog.exists():
            return []
        try:
            return self._read("SELECT * FROM attempts WHERE id = ? ORDER BY attempt", (run_id,))
        except sqlite3.OperationalError:  # a read-only catalog of an older release: no attempts table
            return []

    def list(self, study: str | None = None, status: str | None = None, limit: int | None = None,
             kind: str | None = None, tag: str | None = None, statuses=(), params: dict | None = None) -> list[dict]:
        """Catalog rows, newest first, filtered in the catalog itself (so `limit` counts matching rows): by study,
        status (or any of `statuses`), kind, tag, and dial values `params` (numbers equal to a relative 1e-9)."""
        if not self.catalog.exists() and not any(self._files()):
            return []
        where, args = [], []
        for s in statuses:
            if s not in STATUSES:
                raise ConfigError("status", s, f"one of {', '.join(STATUSES)}")
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += list(statuses)
        for name, value in (params or {}).items():
            if not str(name).isidentifier():
                raise ConfigError("dials", name, "dial names (letters, digits and '_')")
            path = f"$.{name}"
            if isinstance(value, bool):
                where.append("json_type(params, ?) = ?")
                args += [path, "true" if value else "false"]
            elif isinstance(value, (int, float)):
                where.append("json_type(params, ?) IN ('integer', 'real') AND "
                             "abs(json_extract(params, ?) - ?) <= 1e-9 * max(1.0, abs(?))")
                args += [path, path, float(value), float(value)]
            elif isinstance(value, (list, dict)):
                where.append("json_extract(params, ?) = json(?)")
                args += [path, json.dumps(value)]
            else:
                where.append("json_extract(params, ?) = ?")
                args += [path, value]
        if tag:
            check_tags([tag])
            where.append("(',' || tags || ',') LIKE ?")
            args.append(f"%,{tag},%")
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if study:
            where.append("study = ?")
            args.append(study)
        if status:
            if status not in STATUSES:
                raise ConfigError("status", status, f"one of {', '.join(STATUSES)}")
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY finished DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._read(sql, args)

    # -- files ----------------------------------------------------------------------------------------------------
    def path_for(self, study: str, run_id: str) -> Path:
        if not re.match(r"^[a-z][a-z0-9_]*$", str(study)):
            raise ConfigError("study", study, "a study key (lowercase letters, digits and '_')")
        return self.root / "runs" / study / f"{check_run_id(run_id)}.nc"

    def file(self, meta: dict) -> Path:
        """The file of a catalog row, confined to the store: a row naming a path outside it is refused."""
        root = self.root.resolve()
        path = (self.root / str(meta.get("path") or "")).resolve()
        if root not in path.parents or path.suffix != ".nc":
            raise StoreError(f"run {meta.get('id')!r}: its catalog path {meta.get('path')!r} is not a run file "
                             f"inside {self.root}; refused (rebuild the catalog: workbench catalog rebuild)")
        return path

    def check(self, meta: dict, full: bool = True) -> str:
        """What is wrong with a row's file ('' : nothing): missing, or not the file written (size, and with
        `full` its SHA-256, against the catalog's)."""
        try:
            path = self.file(meta)
        except StoreError as e:
            return str(e)
        if not path.is_file():
            return f"its file {path} is missing"
        size = meta.get("size")
        if size is not None and path.stat().st_size != size:
            return f"its file {path} has {path.stat().st_size} bytes, {size} were written (truncated or replaced)"
        if full and meta.get("sha256") and _sha256(path) != meta["sha256"]:
            return f"its file {path} is not the one written (SHA-256 differs: damaged)"
        return ""

    def save(self, meta: dict, ds: xr.Dataset) -> dict:
        """Store a run's (or sweep's) dataset and catalog row; returns the row as stored. A finished result is
        never lost: an attempt that ended cancelled or failed is kept beside an existing result as an attempt,
        and a new result moves the old one to the attempts. Disk full or a read-only folder: StoreError, and what
        was stored before is as it was."""
        path = self.path_for(meta["study"], meta["id"])
        try:
            self._connect().close()  # the catalog first: a file without a row would look like a lost catalog
        except sqlite3.Error as e:
            raise _store_error(e, self.catalog) from e
        old = self.get(meta["id"])
        if old is not None and old.get("owner"):  # a run belongs to whoever first stored it, whoever recomputes it
            meta = {**meta, "owner": old["owner"]}
            ds.attrs["owner"] = old["owner"]
        keep_old = old is not None and old["status"] in FINISHED and not self.check(old, full=False)
        if keep_old and meta["status"] not in FINISHED:  # the result stays; this attempt goes beside it
            n = self._next_attempt(meta["id"])
            target = path.with_name(f"{meta['id']}.attempt-{n}.nc")
            self._insert("attempts", {**self._commit(self._stage(ds, target), target, meta), "attempt": n})
            return self._read("SELECT * FROM attempts WHERE id = ? AND attempt = ?", (meta["id"], n))[0]
        staged = self._stage(ds, path)  # the new file, whole, before anything stored is touched
        try:
            if keep_old:  # the old result to the attempts (a copy: the result file stays until it is replaced)
                n = self._next_attempt(meta["id"])
                target = path.with_name(f"{meta['id']}.attempt-{n}.nc")
                try:
                    shutil.copy2(self.file(old), target)
                except OSError as e:
                    target.unlink(missing_ok=True)
                    raise _store_error(e, target) from e
                self._insert("attempts", {**_flat(old), "path": str(target.relative_to(self.root)), "attempt": n})
            self._insert("runs", self._commit(staged, path, meta))
        finally:
            staged.unlink(missing_ok=True)
        return self.get(meta["id"])

    def _stage(self, ds: xr.Dataset, path: Path) -> Path:
        """The dataset written whole to a temp file beside `path` (write_atomic's first half)."""
        try:
            return write_atomic(ds, path, replace=False)
        except OSError as e:
            raise _store_error(e, path) from e

    def _commit(self, staged: Path, path: Path, meta: dict) -> dict:
        """The staged file renamed into place; its catalog row (not yet inserted)."""
        try:
            os.replace(staged, path)
        except OSError as e:
            staged.unlink(missing_ok=True)
            raise _store_error(e, path) from e
        return _file_row(meta, path, self.root)

    def _insert(self, table: str, row: dict) -> None:
        try:
            with closing(self._connect()) as con, con:
                _insert_into(con, table, row)
        except sqlite3.OperationalError as e:
            raise _store_error(e, self.catalog) from e

    def _next_attempt(self, run_id: str) -> int:
        taken = [a["attempt"] for a in self.attempts(run_id)]
        folder = self.root / "runs"
        taken += [int(m.group(2)) for p in folder.glob(f"*/{run_id}.attempt-*.nc")
                  if (m := ATTEMPT_FILE.match(p.name))]
        return max(taken, default=0) + 1

    def load_dataset(self, run_id: str, meta: dict | None = None) -> xr.Dataset:
        """A run's dataset (or an attempt's, given its row), checked against the catalog's checksum first: a
        damaged file is reported, never read as the result."""
        meta = meta or self.get(run_id)
        if meta is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        problem = self.check(meta)
        if problem and meta.get("sha256"):  # a result replaced since this row was read: it moved to the attempts
            moved = [a for a in self.attempts(run_id) if a["sha256"] == meta["sha256"] and not self.check(a)]
            if moved:
                meta, problem = moved[-1], ""
        if problem:
            raise RunNotFound(f"run {run_id!r} is in the catalog but {problem}")
        return xr.load_dataset(self.file(meta), engine="h5netcdf")

    def set_tags(self, run_id: str, tags) -> list[str]:
        """Replace a run's tags (validated); returns them."""
        tags = check_tags(tags)
        if self.get(run_id) is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        with closing(self._connect()) as con, con:
            con.execute("UPDATE runs SET tags = ? WHERE id = ?", (",".join(tags), run_id))
        return tags

    def delete(self, run_id: str) -> None:
        """Remove a run, its file and its attempts (files confined to the store)."""
        meta = self.get(run_id)
        if meta is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        files = [self.file(m) for m in [meta, *self.attempts(run_id)]]  # refused before anything is removed
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            con.execute("DELETE FROM attempts WHERE id = ?", (run_id,))
        for f in files:
            f.unlink(missing_ok=True)

    def clear_temp(self, older_than: float = STALE_S) -> int:
        """Remove temp files left by writers that died (untouched for `older_than` seconds: a live writer's are
        younger); returns how many."""
        n, cutoff = 0, time.time() - older_than
        temps = [*(self.root / "runs").glob("*/.*.tmp"), *(self.root / "sweeps").glob("*/*/.*.tmp")]
        for p in temps:
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    # -- recovery -------------------------------------------------------------------------------------------------
    def _files(self):
        """Run and attempt files under runs/<study>/ (not sweep parts, not temp files)."""
        folder = self.root / "runs"
        if not folder.is_dir():
            return iter(())
        return (p for p in folder.glob("*/*.nc") if RUN_ID.match(p.stem) or ATTEMPT_FILE.match(p.name))

    def rebuild(self, old: str = "damaged") -> dict:
        """A new catalog from the run files (each carries its metadata); the old catalog, if any, is kept as
        catalog.sqlite.<old>-<time> ("damaged" when it could not be read; the CLI's explicit rebuild: "replaced"). Tags set after a run was stored are lost if the old catalog is unreadable.
        Returns counts: {"runs", "attempts", "unreadable": [file, ...]}."""
        tags = {}
        try:  # tags from the old catalog where it still reads
            if self.catalog.exists():
                with closing(self._open(self.catalog)) as con:
                    tags = {r["id"]: r["tags"] for r in con.execute("SELECT id, tags FROM runs")}
        except sqlite3.DatabaseError:
            pass
        tmp = self.root / f".catalog.{uuid.uuid4().hex[:8]}.tmp"
        counts = {"runs": 0, "attempts": 0, "unreadable": []}
        try:
            with closing(self._open(tmp, wal=False)) as con, con:
                for path in sorted(self._files()):
                    try:
                        row = _row_from_file(path, self.root)
                    except (OSError, ValueError, KeyError) as e:
                        counts["unreadable"].append(f"{path}: {type(e).__name__}: {e}")
                        continue
                    m = ATTEMPT_FILE.match(path.name)
                    if m:
                        row["attempt"] = int(m.group(2))
                    else:
                        row["tags"] = tags.get(row["id"], row["tags"])
                    table = "attempts" if m else "runs"
                    _insert_into(con, table, row)
                    counts[table] += 1
            if self.catalog.exists():
                self.catalog.replace(self.catalog.with_name(f"catalog.sqlite.{old}-{int(time.time())}"))
            for side in ("-wal", "-shm"):
                self.catalog.with_name(self.catalog.name + side).unlink(missing_ok=True)
            os.replace(tmp, self.catalog)
        except OSError as e:
            raise _store_error(e, self.catalog) from e
        finally:
            tmp.unlink(missing_ok=True)
        for u in counts["unreadable"]:
            log.warning("catalog rebuild: %s", u)
        return counts


def write_atomic(ds: xr.Dataset, path: Path, replace: bool = True) -> Path:
    """Write a dataset to `path` so that a reader sees the old file or the whole new one, never half of it: the
    netCDF made in memory first (libhdf5 writing into a full disk crashed the process), then a temp file in the same
    folder (.NAME.*.tmp), fsync, rename. A killed writer leaves at most a temp file; a full disk an OSError.
    replace=False: stop before the rename and return the temp file (the caller renames it)."""
    data = _netcdf_bytes(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not replace:
            return tmp
        os.replace(tmp, path)
        return path
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _netcdf_bytes(ds: xr.Dataset) -> bytes:
    """The dataset as netCDF, in memory. With a Dask client around, xarray would take a cluster-wide lock named
    after the in-memory buffer (which fails): the arrays are in memory anyway, so the local scheduler is used."""
    try:
        import dask
    except ImportError:
        return bytes(ds.to_netcdf(engine="h5netcdf"))
    with dask.config.set(scheduler="synchronous"):
        return bytes(ds.to_netcdf(engine="h5netcdf"))


def _row(row: sqlite3.Row) -> dict:
    """A catalog row as a dict; a column that does not parse (a damaged row) is said in `error`, not raised."""
    d = dict(row)
    for name, empty in (("params", {}), ("data", {})):
        try:
            d[name] = json.loads(d.get(name) or "{}")
        except (TypeError, ValueError):
            d[name] = empty
            d["error"] = f"catalog row damaged: {name} is not JSON" + (f"; {d['error']}" if d.get("error") else "")
    d["tags"] = [t for t in (d.get("tags") or "").split(",") if t]
    return d


def _flat(meta: dict) -> dict:
    """A run's metadata as catalog columns (JSON and comma-joined where the catalog keeps text)."""
    row = {k: meta.get(k) for k in _COLUMNS}
    row["params"] = json.dumps(meta["params"], sort_keys=True)
    row["tags"] = ",".join(meta.get("tags") or [])
    row["kind"] = meta.get("kind") or "run"
    row["owner"] = meta.get("owner") or ""  # who stored it on a shared server ('' : the store's own user)
    row["code"] = meta.get("code") or ""  # the fingerprint of the code that computed it ('' : unknown)
    row["data"] = json.dumps(meta.get("data") or {}, sort_keys=True)  # {data file: digest}
    return row


def _row_from_file(path: Path, root: Path) -> dict:
    """The catalog row of a run file, from the metadata stamped on it (runs.run.record)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        a = dict(ds.attrs)
    step = int(a.get("step", -1))
    meta = {"id": a["run_id"], "study": a["study"], "kind": a.get("kind") or "run", "status": a["status"],
            "params": json.loads(a["config"]), "created": a.get("created"), "finished": a.get("finished"),
            "wall_s": a.get("wall_s"), "error": a.get("error") or None, "step": None if step < 0 else step,
            "device": a.get("device"), "tags": [t for t in str(a.get("tags", "")).split(",") if t],
            "code": a.get("code") or "", "data": json.loads(a.get("data") or "{}"), "owner": a.get("owner") or ""}
    if meta["status"] not in STATUSES or not RUN_ID.match(meta["id"]):
        raise ValueError(f"not a run file (status {meta['status']!r}, id {meta['id']!r})")
    return _file_row(meta, path, root)


def _file_row(meta: dict, path: Path, root: Path) -> dict:
    """The catalog row of `meta` stored at `path`: its columns, the path inside the store, the file's size and
    SHA-256."""
    row = _flat(meta)
    row["path"] = str(path.relative_to(root))
    row["size"], row["sha256"] = path.stat().st_size, _sha256(path)
    return row


def _insert_into(con: sqlite3.Connection, table: str, row: dict) -> None:
    """One row into `runs` or `attempts` (which adds the attempt number), replacing one of the same key."""
    cols = list(_COLUMNS) + (["attempt"] if table == "attempts" else [])
    con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [row.get(k) for k in cols])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _damaged(e: sqlite3.DatabaseError) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("not a database", "malformed", "corrupt", "file is encrypted"))


def _store_error(e: Exception, where: Path) -> StoreError:
    """An OS or SQLite error of the store in words: what happened, where, and what to do. SQLite says only
    "unable to open database file" or "disk I/O error": the folder is probed to tell which it is."""
    code = getattr(e, "errno", None)
    text = str(e).lower()
    if code is None:
        code = _probe(where if where.is_dir() else where.parent)
    if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "disk is full" in text or "no space" in text:
        why = "the disk is full (or a file-size limit is reached): free space and run again; nothing stored " \
              "was changed"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "read-only" in text:
        why = "the data folder cannot be written (read-only or no permission): reading still works; set " \
              "WORKBENCH_DATA to a writable folder to store results"
    else:
        why = f"{type(e).__name__}: {e}"
    return StoreError(f"cannot write {where}: {why}")


def _probe(folder: Path) -> int | None:
    """The errno of writing a small file into `folder` (None: it can be written)."""
    probe = folder / f".probe.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        return None
    except OSError as e:
        return e.errno
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


__all__ = ["Store", "default_root", "check_run_id", "check_tags", "STATUSES", "FINISHED"]
