"""Reading a JSON file someone else may have touched (a run file, a stage-0 record, a submission record, a data
manifest): a regular file of bounded size and nesting, or the reason it is not, never an exception."""
from __future__ import annotations

import json
import os
import stat

MAX_JSON_BYTES = 256 * 2**20  # a run file with per-item records of thousands of items is a few MB


class Refused(ValueError):
    """A file that read_regular will not read: not a regular file, or too large."""


def read_regular(path, max_bytes: int, tail: bool = False, follow: bool = True) -> bytes:
    """At most `max_bytes` of a file (its last ones with `tail`), read only when what was opened is a regular file
    of at most that size (checked on the open descriptor, so a file swapped for a FIFO between a check and the open
    cannot hang the reader, and the bytes are copied, not mapped, so a file truncated while it is read cannot kill
    the reader with SIGBUS); a symbolic link is not followed unless `follow`. Refused, or OSError where it cannot
    be opened, otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_size > max_bytes and not tail:
            raise Refused(f"{info.st_size} bytes, over the {max_bytes}-byte limit")
        if tail:
            os.lseek(fd, max(0, info.st_size - max_bytes), os.SEEK_SET)
        chunks, left = [], max_bytes
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(path) -> tuple[object, str | None]:
    """(data, None) for a stored JSON file, or (None, why): only a regular file is read (a FIFO would hang
    the reader, a link to /dev/zero never end), at most MAX_JSON_BYTES of it, and JSON nested deeper than
    Python's recursion limit is named, not raised."""
    try:
        text = read_regular(path, MAX_JSON_BYTES).decode("utf-8")
    except Refused as e:
        return None, str(e)
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
