"""How a result file is written: atomically (a reader never sees half a file, a full or read-only disk leaves the
old one intact and raises StoreError naming it), with a digest of its contents, under a schema version."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..core.errors import StoreError

SCHEMA_VERSION = 2  # 2: per-item records under each view's `items` (harness.run.evaluation)
READABLE_SCHEMAS = {1, 2}  # 1: before per-item records; read, with no item-level statistics


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """write_text_atomic for bytes. The temp file has a name of its own (mkstemp: created, never opened through a
    link left there), and the rename replaces a link at `path` rather than writing through it."""
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
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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


def run_files(results_dir) -> list[tuple[Path, str | None]]:
    """(path, None) for each run file of a results folder (runs/*.json, hidden ones not), sorted; a file whose name
    is not UTF-8 comes as (its name with U+FFFD, why), so no report that prints it can crash. [] without runs/;
    StoreError where runs/ cannot be listed (read as empty, a board would drop every row)."""
    folder = Path(results_dir) / "runs"
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".json") and e.name[0] != ".")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"{folder}: cannot list its run files: {e.strerror}") from None
    out = []
    for name in names:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        out.append((folder / name, None) if shown == name else (folder / shown, "its file name is not UTF-8; rename it"))
    return out


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
