"""The store: one netCDF file per run under <root>/runs/<study>/, and a SQLite catalog <root>/catalog.sqlite.

Files are written atomically (temp file in the same folder, fsync, rename) so a killed process never leaves a
half-written result; the catalog row is written after the file.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import xarray as xr

from ..errors import ConfigError, RunNotFound

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
TAG = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
STATUSES = ("done", "diverged", "failed", "cancelled")
_COLUMNS = ("id", "study", "kind", "status", "params", "created", "finished", "wall_s", "path", "error", "step",
            "device", "tags", "code", "data")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, study TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'run', status TEXT NOT NULL,
    params TEXT NOT NULL,
    created TEXT, finished TEXT, wall_s REAL, path TEXT NOT NULL, error TEXT, step INTEGER,
    device TEXT, tags TEXT NOT NULL DEFAULT '', code TEXT NOT NULL DEFAULT '', data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study, status);
"""
# columns added after the first release: an older catalog gains them (with these defaults), keeping its rows
_ADDED = {"kind": "TEXT NOT NULL DEFAULT 'run'", "step": "INTEGER", "device": "TEXT",
          "tags": "TEXT NOT NULL DEFAULT ''", "code": "TEXT NOT NULL DEFAULT ''", "data": "TEXT NOT NULL DEFAULT '{}'"}


def default_root() -> Path:
    """$WORKBENCH_DATA, else the source checkout's data/ folder, else ./data."""
    env = os.environ.get("WORKBENCH_DATA")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "workbench").is_dir():
        return repo / "data"
    return Path.cwd() / "data"


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
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.catalog, timeout=30)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        for name, decl in _ADDED.items():
            if name not in have:
                con.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
        return con

    def get(self, run_id: str) -> dict | None:
        check_run_id(run_id)
        if not self.catalog.exists():
            return None
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row(row) if row else None

    def list(self, study: str | None = None, status: str | None = None, limit: int | None = None,
             kind: str | None = None, tag: str | None = None, statuses=(), params: dict | None = None) -> list[dict]:
        """Catalog rows, newest first, filtered in the catalog itself (so `limit` counts matching rows): by study,
        status (or any of `statuses`), kind, tag, and dial values `params` (numbers equal to a relative 1e-9)."""
        if not self.catalog.exists():
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
        with closing(self._connect()) as con:
            return [_row(r) for r in con.execute(sql, args).fetchall()]

    # -- files ----------------------------------------------------------------------------------------------------
    def path_for(self, study: str, run_id: str) -> Path:
        return self.root / "runs" / study / f"{check_run_id(run_id)}.nc"

    def save(self, meta: dict, ds: xr.Dataset) -> Path:
        """Write the dataset atomically, then its catalog row (replacing an earlier one of the same id)."""
        path = self.path_for(meta["study"], meta["id"])
        write_atomic(ds, path)
        row = {k: meta.get(k) for k in _COLUMNS}
        row["params"] = json.dumps(meta["params"], sort_keys=True)
        row["path"] = str(path.relative_to(self.root))
        row["tags"] = ",".join(meta.get("tags") or [])
        row["kind"] = meta.get("kind") or "run"
        row["code"] = meta.get("code") or ""  # the fingerprint of the code that computed it ('' : unknown)
        row["data"] = json.dumps(meta.get("data") or {}, sort_keys=True)  # {data file: digest}
        with closing(self._connect()) as con, con:
            con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                        [row[k] for k in _COLUMNS])
        return path

    def load_dataset(self, run_id: str) -> xr.Dataset:
        meta = self.get(run_id)
        if meta is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        path = self.root / meta["path"]
        if not path.is_file():
            raise RunNotFound(f"run {run_id!r} is in the catalog but its file {path} is missing")
        return xr.load_dataset(path, engine="h5netcdf")

    def set_tags(self, run_id: str, tags) -> list[str]:
        """Replace a run's tags (validated); returns them."""
        tags = check_tags(tags)
        if self.get(run_id) is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        with closing(self._connect()) as con, con:
            con.execute("UPDATE runs SET tags = ? WHERE id = ?", (",".join(tags), run_id))
        return tags

    def delete(self, run_id: str) -> None:
        meta = self.get(run_id)
        if meta is None:
            raise RunNotFound(f"no run {run_id!r} in {self.catalog}")
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        (self.root / meta["path"]).unlink(missing_ok=True)

    def clear_temp(self) -> int:
        """Remove temp files left by killed writers; returns how many."""
        n = 0
        for p in (self.root / "runs").glob("*/.*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        return n


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write a dataset to `path` so that a reader sees the old file or the whole new one, never half of it: a temp
    file in the same folder (.NAME.*.tmp), fsync, rename. A killed writer leaves at most a temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["params"] = json.loads(d["params"])
    d["data"] = json.loads(d.get("data") or "{}")
    d["tags"] = [t for t in (d.get("tags") or "").split(",") if t]
    return d


__all__ = ["Store", "default_root", "check_run_id", "check_tags", "STATUSES"]
