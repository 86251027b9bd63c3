"""Run model-written code against tests in a separate, limited process.

Each program is written to a file in its own temporary directory (removed afterwards) and runs
as `python -I` there, in a new session, with a wall-clock timeout, an address-space limit and a
CPU-time limit, and an empty environment, confined by Landlock (tasks/confine.py) where the
kernel has it: it can write only in that directory, cannot open TCP connections and cannot
signal other processes; a seccomp filter lets it start no other process (fork, vfork, spawn
fail; threads work). When it ends, or its time is up, its whole process group is killed.
Code of any size and any characters (NUL bytes included) gives True or False, never an
exception. This guards against accidents and careless code (infinite loops, runaway memory,
stray writes, network calls, fork bombs); it is not a hardened sandbox (reads are not
restricted, UDP is not covered).
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .confine import confine

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(reply: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    m = FENCE.search(reply)
    return m.group(1) if m else reply


def _limits(memory_mb: int, cpu_seconds: int, folder: str):
    def apply():  # in the child, between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        confine(folder)
    return apply


def passes(code: str, tests: str, timeout: float = 10.0, memory_mb: int = 1024) -> bool:
    """True when `code` followed by `tests` exits 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="clbench-exec-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_bytes(f"{code}\n\n{tests}\n".encode("utf-8", "replace"))  # a lone surrogate becomes '?'
        proc = subprocess.Popen([sys.executable, "-I", str(program)], cwd=tmp, env={}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_limits(memory_mb, int(timeout) + 1, tmp))
        try:
            return proc.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the program and every child still in its group
            proc.wait()
