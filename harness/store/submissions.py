"""The submissions of a results folder, as the store holds them: `<results>/submissions/<name>/record.json`
(written by harness.submit.submission) read back untrusted, and the names taken. `clbench run` reads them too, so that
no config can put its runs under a submission's name."""
from __future__ import annotations

import re
from pathlib import Path

from ..core.json_file import read_json

RECORD_FIELDS = {"name": str, "author": str, "method": str, "file": dict, "run_ids": list}
RUN_ID = re.compile(r"[0-9a-f]{16}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def read_record(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) or (None, why): a stored record.json is untrusted (bounded read, types, the SHA and run ids
    that --replace turns into paths checked)."""
    data, why = read_json(path)
    if why:
        return None, why
    if not isinstance(data, dict):
        return None, "not a JSON object"
    for key, kind in RECORD_FIELDS.items():
        if not isinstance(data.get(key), kind):
            return None, f"field '{key}' is missing or not a {kind.__name__}"
    if not (isinstance(data["file"].get("sha256"), str) and SHA256.fullmatch(data["file"]["sha256"])):
        return None, "file.sha256 is not 64 hex digits"
    if not all(isinstance(i, str) and RUN_ID.fullmatch(i) for i in data["run_ids"]):
        return None, "run_ids holds something other than 16-hex-digit run ids"
    return data, None


def file_copy(results, name: str, sha256: str, filename: str) -> Path:
    """Where a submission's file is copied, and what its runs' spec.method names (resolved):
    <results>/submissions/<name>/<first 12 hex digits of its SHA-256>/<file>."""
    return Path(results) / "submissions" / name / sha256[:12] / filename


def moved_copy(path: str, results) -> tuple[Path, str] | None:
    """(the same copy under `results`, the SHA-256 prefix its folder names) for a file_copy path a run stored in a
    results folder that has moved since; None for a path that is no submission's copy."""
    parts = Path(path).parts
    if "submissions" not in parts[:-3]:
        return None
    i = len(parts) - 1 - parts[::-1].index("submissions")
    if len(parts) - i != 4:
        return None
    _, name, sha12, filename = parts[i:]
    return file_copy(results, name, sha12, filename), sha12


def stored_names(results) -> dict[str, str]:
    """{casefolded name: name} of the submissions stored in a results folder."""
    folder = Path(results) / "submissions"
    return {p.name.casefold(): p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}
