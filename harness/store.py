"""The result store: one JSON file per run, written atomically, plus the shared stage-0 cache.

    <root>/runs/<run_id>.json      one run (status running | finished | failed)
    <root>/stage0/<key>.json       base-model scores shared by every method of a protocol
    <root>/.clbench.lock           held (flock) by the driver of the sweep writing here

A write either replaces the whole file or leaves the old one untouched: a full disk or a
read-only folder raises StoreError naming the file, and no partial file is left behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
import warnings
from pathlib import Path

from .errors import StoreError

SCHEMA_VERSION = 2  # 2: per-item records under each view's `items` (harness.evaluation)
READABLE_SCHEMAS = {1, 2}  # 1: before per-item records; read, with no item-level statistics


MAX_JSON_BYTES = 256 * 2**20  # a run file with per-item records of thousands of items is a few MB


def read_json(path) -> tuple[object, str | None]:
    """(data, None) for a stored JSON file, or (None, why): only a regular file is opened (a FIFO would hang
    the reader, a link to /dev/zero never end), at most MAX_JSON_BYTES of it, and JSON nested deeper than
    Python's recursion limit is named, not raised."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return None, "not a regular file"
    if info.st_size > MAX_JSON_BYTES:
        return None, f"{info.st_size} bytes, over the {MAX_JSON_BYTES}-byte limit of a result file"
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_JSON_BYTES + 1).decode("utf-8")
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON (truncated?): {e}"
    except RecursionError:
        return None, "JSON nested too deeply to be a result file"


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StoreError(f"{path}: cannot write: {e.strerror}; {_FIX}") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write: {e.strerror}; the previous version, if any, is intact; "
                         f"{_FIX}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_FIX = "free space or make the results folder writable (or pass another --results) and run again"


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def digest(record: dict) -> str:
    """SHA-256 of a stored record's canonical JSON without its own `digest` field: an edit after writing shows
    (integrity against accidents and careless edits; a forger recomputes it, so `clbench reproduce` is the check)."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def digest_problem(record: dict) -> str | None:
    """Why a record's digest does not hold; None when it holds or the record predates digests."""
    if "digest" not in record:
        return None
    if record["digest"] != digest(record):
        return "its contents were changed after it was written (digest mismatch)"
    return None


class Store:
    def __init__(self, root):
        self.root = Path(root)

    @contextlib.contextmanager
    def sweep_lock(self, log=print, file: str = ".clbench.lock", holder: str = "sweep"):
        """Hold the results folder for one sweep. A second `clbench run` on the same folder waits
        here, then skips what the first finished: no run is computed or stored twice. The lock
        is an flock, so it is released when its holder exits, even by SIGKILL. `clbench submit` holds
        another one (`file`) while it takes a name, so two submissions of one name are serialised."""
        path = self.root / file
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+")
        except OSError as e:
            raise StoreError(f"{path}: cannot open: {e.strerror}; {_FIX}") from e
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                log(f"{self.root}: another clbench {holder} ({f.read().strip() or 'unknown pid'}) is writing here; "
                    "waiting for it to finish")
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Fail before any compute when results cannot be stored."""
        write_text_atomic(self.root / "runs" / ".write-check", "")
        (self.root / "runs" / ".write-check").unlink()

    def run_path(self, run_id: str) -> Path:
        return self.root / "runs" / f"{run_id}.json"

    def save_run(self, result: dict) -> Path:
        path = self.run_path(result["run_id"])
        result["digest"] = digest(result)
        write_json_atomic(path, result)
        return path

    def load_run(self, run_id: str) -> dict | None:
        """The stored run, or None when there is none or its file cannot be trusted (truncated, another
        run's, invalid): that file is moved aside to `<run_id>.json.invalid-<time>`, with a warning that
        names it and why, so the run is computed again instead of failing every later sweep."""
        from .validate import problem

        path = self.run_path(run_id)
        if not os.path.lexists(path):
            return None
        data, why = problem(path)
        if why is None:
            return data
        aside = path.with_name(f"{path.name}.invalid-{int(time.time())}")
        os.replace(path, aside)
        warnings.warn(f"{path}: {why}; moved aside to {aside.name}, the run is computed again")
        return None

    def runs(self) -> list[dict]:
        """Every valid run file; a bad one is skipped with a warning that names it and why."""
        from .validate import problem

        out = []
        for path in sorted((self.root / "runs").glob("*.json")):
            data, why = problem(path)
            if why:
                warnings.warn(f"{path}: skipped: {why} (see `clbench validate`)")
                continue
            out.append(data)
        return out

    def stage0_path(self, key: str) -> Path:
        return self.root / "stage0" / f"{key}.json"

    def load_stage0(self, key: str) -> dict | None:
        """The stored base-model evaluation, or None when there is none or it is not a readable JSON object
        with scores and probes whose digest holds and whose per-item records are whole (then it is computed
        again and replaced)."""
        from .validate import items_problem

        path = self.stage0_path(key)
        if not os.path.lexists(path):
            return None
        data, why = read_json(path)
        if why is None and isinstance(data, dict) and isinstance(data.get("scores"), dict) \
                and isinstance(data.get("probes"), dict):
            why = digest_problem(data) or items_problem(data, "stage 0")
            if why is None:
                return {k: v for k, v in data.items() if k != "digest"}
        warnings.warn(f"{path}: {why or 'not a stage-0 record'}; it is computed again")
        return None

    def save_stage0(self, key: str, record: dict) -> None:
        write_json_atomic(self.stage0_path(key), {**record, "digest": digest(record)})
