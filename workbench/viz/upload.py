"""Uploading a data set to a served dashboard.

On a served page a file dial (data_path) names an .npz in the server's data folder (page.user_data), never any path
of the server's file system; this is how a visitor's own data gets there. The file is checked as a run would check
it (datasets.from_npz: archive headers, shapes, types, labels) before anything is kept, stored under a name made
from its content (`<sha256[:16]>-<name>.npz`: the same file uploaded twice is one file, and a name never points at
other data than it did), written to a temporary file and renamed into place (nothing half-written), and the page's
dials are set to it.

Limits, on the server, not only in the browser: at most $WORKBENCH_MAX_UPLOAD_BYTES per file (64 MiB; the browser
widget says so and refuses larger files before sending; the server drops a transfer that grows past it), and at
most $WORKBENCH_QUOTA_UPLOADS bytes in the whole data folder (1 GiB).
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from pathlib import Path

import panel as pn

from .. import datasets
from ..errors import ConfigError
from ..runs.jobs import _env_number
from .markup import escape

MAX_UPLOAD = 64 * 2**20
FOLDER_QUOTA = 2**30


def max_upload() -> int:
    return _env_number("WORKBENCH_MAX_UPLOAD_BYTES", MAX_UPLOAD)


def folder_quota() -> int:
    return _env_number("WORKBENCH_QUOTA_UPLOADS", FOLDER_QUOTA)


def _mib(n: int) -> str:
    """A size in words: '980 bytes', '12.5 KiB', '64.0 MiB', '1.00 GiB'."""
    if n < 2**10:
        return f"{n:,} bytes"
    if n < 2**20:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def safe_name(name: str) -> str:
    """A file name's stem as it may appear in a stored name: letters, digits, '.', '_' and '-', at most 40."""
    stem = Path(str(name).replace("\\", "/")).name
    stem = stem[:-4] if stem.lower().endswith(".npz") else stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-")[:40]
    return stem or "data"


def store_upload(folder: Path, name: str, content: bytes) -> tuple[str, datasets.Data]:
    """Check an uploaded .npz and keep it in `folder`: (its stored name, the data as a run reads it). ConfigError
    (field "upload") naming what is wrong, with nothing left behind; a full or read-only disk is said in words."""
    shown = str(name)
    if not isinstance(content, (bytes, bytearray)):
        raise ConfigError("upload", shown, "an .npz file (this one arrived as text)")
    limit = max_upload()
    if len(content) > limit:
        raise ConfigError("upload", shown, f"a file of at most {_mib(limit)} (WORKBENCH_MAX_UPLOAD_BYTES; this one "
                                           f"is {_mib(len(content))})")
    if not shown.lower().endswith(".npz"):
        raise ConfigError("upload", shown, "an .npz file (np.savez(path, X=..., y=...))")
    folder = Path(folder)
    digest = hashlib.sha256(content).hexdigest()[:16]
    stored = f"{digest}-{safe_name(shown)}.npz"
    final = folder / stored
    used = sum(p.stat().st_size for p in folder.rglob("*.npz") if p.is_file()) if folder.is_dir() else 0
    if not final.exists() and used + len(content) > folder_quota():
        raise ConfigError("upload", shown, f"room in the server's data folder: it holds {_mib(used)} of at most "
                                           f"{_mib(folder_quota())} (WORKBENCH_QUOTA_UPLOADS); ask its keeper to "
                                           "clear old uploads")
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        data = datasets.from_npz(tmp, field="upload")
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
    except ConfigError as e:
        tmp.unlink(missing_ok=True)
        said = str(e.allowed).replace(str(tmp), shown).replace(tmp.name, shown)  # its name, not the temporary one
        raise ConfigError("upload", shown, said) from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError("upload", shown, f"room to keep it in the server's data folder ({e.strerror or e}); "
                                           "nothing was kept") from None
    return stored, data


class CappedFileDropper(pn.widgets.FileDropper):
    """Panel's chunked file drop, with the size limit kept on the server too: the browser's limit can be bypassed
    by a hand-written client, which could otherwise send chunks until the server runs out of memory."""

    def __init__(self, limit: int, on_refused, **params):
        super().__init__(**params)
        self._limit, self._on_refused = limit, on_refused
        self._buffered: dict[str, int] = {}

    def _process_event(self, event):
        if event.event_name != "upload_event":
            return super()._process_event(event)
        data = event.data
        name = str(data.get("name", ""))
        if data.get("chunk") == 1:
            self._buffered = {name: 0}  # one file at a time: a new transfer drops any other
            self._file_buffer = {}
        elif name not in self._file_buffer:
            return  # a chunk of a transfer that never started (or was dropped): ignored
        size = len(data.get("data") or b"")
        total = self._buffered.get(name, 0) + size
        if total > self._limit:
            self._file_buffer.pop(name, None)
            self._buffered.pop(name, None)
            self._on_refused(name, total)
            return
        self._buffered[name] = total
        super()._process_event(event)
        if data.get("chunk") == data.get("total_chunks"):
            self._buffered.pop(name, None)


class DataUpload:
    """The upload box of a study page with a file dial: a dropped .npz is checked, kept in the server's data folder
    and chosen (dataset="npz", data_path=<its stored name>)."""

    def __init__(self, page, folder: Path):
        self.page, self.folder = page, Path(folder)
        self.limit = limit = max_upload()
        # no accepted_filetypes: browsers give .npz no type, so FilePond would refuse it; checked here instead
        self.widget = CappedFileDropper(limit, self._too_big, multiple=False,
                                        max_file_size=f"{max(1, limit // 2**10)}KB", chunk_size=4 * 2**20,
                                        label="your data (.npz)", layout="compact", width=280,
                                        css_classes=["wb-upload"])
        self.message = pn.pane.Markdown(f"Drop an `.npz` with arrays `X` (n, features…) and `y` (n,) labels 0..K-1, "
                                        f"at most {_mib(limit)}.", css_classes=["wb-upload-status"], width=280,
                                        renderer_options={"linkify": False})
        self.widget.param.watch(self._on_value, "value")
        self._busy = False

    def panel(self):
        return pn.Column(self.widget, self.message, width=300)

    def _say(self, text: str) -> None:
        self.message.object = text

    def _too_big(self, name: str, size: int) -> None:
        self._say(f"**Not uploaded:** {escape(name)} is over {_mib(self.limit)} (WORKBENCH_MAX_UPLOAD_BYTES).")

    def _on_value(self, event) -> None:
        files = dict(event.new or {})
        if not files or self._busy:
            return
        name, content = next(iter(files.items()))
        self.widget.value.clear()  # the bytes are ours now; the widget keeps no copy
        self._busy = True
        self._say(f"Checking {escape(name)}...")
        doc = pn.state.curdoc if pn.state.curdoc is not None and pn.state.curdoc.session_context else None

        def work():
            try:
                outcome = store_upload(self.folder, name, content)
            except ConfigError as e:
                outcome = e
            if doc is not None:
                doc.add_next_tick_callback(lambda: self._done(name, outcome))
            else:
                self._done(name, outcome)
        if doc is not None:
            threading.Thread(target=work, daemon=True, name="wb-upload").start()
        else:  # a notebook or a test: at once
            work()

    def receive(self, name: str, content: bytes) -> None:
        """What a finished transfer does (tests and notebooks call it directly)."""
        self.widget.value = {name: content}

    def _done(self, name: str, outcome) -> None:
        self._busy = False
        if isinstance(outcome, ConfigError):
            self._say(f"**Not uploaded:** {escape(outcome)}")
            return
        stored, data = outcome
        dials = self.page.dials
        if "dataset" in dials:
            dials["dataset"].value = "npz"
        dials["data_path"].value = stored
        n = len(data.y_train) + len(data.y_test)
        moved = ""
        if "n_train" in dials and (dials["n_train"].value or 0) >= n:  # more than it holds: two thirds
            dials["n_train"].value = len(data.y_train)
            moved = f", n_train to {len(data.y_train):,} (two thirds; the rest is the test set)"
        self._say(f"Uploaded {escape(name)}: {n:,} examples, {data.input_shape[0]:,} features, {data.num_classes} "
                  f"classes. Kept as `{stored}`; dataset and data_path now point at it{moved} — press **Run**.")
