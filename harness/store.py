"""The result store: one JSON file per run, written atomically, plus the shared stage-0 cache.

    <root>/runs/<run_id>.json      one run (status running | finished | failed)
    <root>/stage0/<key>.json       base-model scores shared by every method of a protocol
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

SCHEMA_VERSION = 1


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


class Store:
    def __init__(self, root):
        self.root = Path(root)

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
