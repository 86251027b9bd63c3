"""Reading a JSON file someone else may have touched (a run file, a stage-0 record, a submission record, a data
manifest): a regular file of bounded size and nesting, or the reason it is not, never an exception."""
from __future__ import annotations

import json
import stat
from pathlib import Path

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
    except ValueError as e:  # an integer literal of more digits than Python converts (4300)
        return None, f"not readable JSON: {e}"
    except RecursionError:
        return None, "JSON nested too deeply to be a result file"
