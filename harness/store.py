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
import json
import os
import tempfile
import warnings
from pathlib import Path

from .errors import StoreError

SCHEMA_VERSION = 2  # 2: per-item records under each view's `items` (harness.evaluation)
READABLE_SCHEMAS = {1, 2}  # 1: before per-item records; read, with no item-level statistics


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


class Store:
    def __init__(self, root):
        self.root = Path(root)

    @contextlib.contextmanager
    def sweep_lock(self, log=print):
        """Hold the results folder for one sweep. A second `clbench run` on the same folder waits
        here, then skips what the first finished: no run is computed or stored twice. The lock
        is an flock, so it is released when its holder exits, even by SIGKILL."""
        path = self.root / ".clbench.lock"
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
                log(f"{self.root}: another clbench sweep ({f.read().strip() or 'unknown pid'}) is writing here; "
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
        write_json_atomic(path, result)
        return path

    def load_run(self, run_id: str) -> dict | None:
        path = self.run_path(run_id)
        return json.loads(path.read_text()) if path.exists() else None

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
        path = self.stage0_path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def save_stage0(self, key: str, record: dict) -> None:
        write_json_atomic(self.stage0_path(key), record)
