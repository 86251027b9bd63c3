"""The result store: one JSON file per run, written atomically, plus the shared stage-0 cache.

    <root>/runs/<run_id>.json      one run (status running | finished | failed)
    <root>/stage0/<key>.json       base-model scores shared by every method of a protocol
    <root>/.clbench.lock           held (flock) by the driver of the sweep writing here

A write either replaces the whole file or leaves the old one untouched: a full disk or a
read-only folder raises StoreError naming the file, and no partial file is left behind.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
import warnings
from pathlib import Path

from ..core.errors import ConfigError, StoreError
from ..core.json_file import read_json
from .files import _FIX, digest, digest_problem, run_files, write_json_atomic, write_text_atomic


def results_folder(results) -> Path:
    """A results folder a command reads, or a one-line ConfigError saying what was given instead: a missing path,
    a file, or a folder without runs/ (its own runs/ folder, say) would otherwise read as an empty board."""
    path, fix = Path(results), "give the folder `clbench run --results` wrote (default: results), which holds runs/"
    if not path.exists():
        raise ConfigError(f"results folder {results} does not exist; {fix}")
    if not path.is_dir():
        raise ConfigError(f"results folder {results} is a file, not a folder; {fix}")
    if not (path / "runs").is_dir():
        if path.name == "runs" and (path.parent / "runs").is_dir():
            raise ConfigError(f"{results} is the runs/ folder of a results folder; give {path.parent}")
        raise ConfigError(f"results folder {results} holds no runs/ folder; {fix}")
    return path


def _missing(record: dict, expected: dict) -> str | None:
    """What of `expected` ({group: {task: view names or None}}) a stage-0 record lacks, as 'lacks scores.law'."""
    for group, tasks in expected.items():
        for task, views in tasks.items():
            held = record[group].get(task)
            if not isinstance(held, dict):
                return f"it lacks {group}.{task}"
            if absent := [v for v in views or () if v not in held]:
                return f"it lacks {group}.{task}.{absent[0]}"
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
        try:  # not through a link, not blocking on a FIFO: the lock file is written, and is the folder's own
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as e:
            why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise StoreError(f"{path}: cannot open it as the folder's lock file: {why}; remove it (no clbench "
                             f"command is using it unless one is running on this folder) or {_FIX}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{path}: the folder's lock file is not a regular file; remove it")
        with os.fdopen(fd, "r+") as f:
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

    def runs(self, skipped: list | None = None) -> list[dict]:
        """Every valid run file; a bad one is skipped with a warning that names it and why, or, given `skipped`,
        listed there as (path, why) for the caller to say (a board says which files it could not read)."""
        from .validate import problem

        out = []
        for path, why in run_files(self.root):
            data, why = (None, why) if why else problem(path)
            if why and skipped is not None:
                skipped.append((path, why))
            elif why:
                warnings.warn(f"{path}: skipped: {why} (see `clbench validate`)")
            else:
                out.append(data)
        return out

    def stage0_path(self, key: str) -> Path:
        return self.root / "stage0" / f"{key}.json"

    def load_stage0(self, key: str, expected: dict | None = None) -> dict | None:
        """The stored base-model evaluation, or None when there is none or it is not a readable JSON object
        with scores and probes whose digest holds, whose per-item records are whole and which holds what
        `expected` names ({'scores' or 'probes': {task: its view names, or None for any}}; then it is computed
        again and replaced)."""
        from .validate import items_problem

        path = self.stage0_path(key)
        if not os.path.lexists(path):
            return None
        data, why = read_json(path)
        if why is None and isinstance(data, dict) and isinstance(data.get("scores"), dict) \
                and isinstance(data.get("probes"), dict):
            why = digest_problem(data) or items_problem(data, "stage 0") or _missing(data, expected or {})
            if why is None:
                return {k: v for k, v in data.items() if k != "digest"}
        warnings.warn(f"{path}: {why or 'not a stage-0 record'}; it is computed again")
        return None

    def save_stage0(self, key: str, record: dict) -> None:
        write_json_atomic(self.stage0_path(key), {**record, "digest": digest(record)})
