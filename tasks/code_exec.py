"""Run model-written code against tests in a separate, limited process.

Each program runs in `python -I` in its own temporary directory (removed afterwards),
with a wall-clock timeout, an address-space limit and a CPU-time limit, and an empty
environment, confined by Landlock (tasks/confine.py) where the kernel has it: it can write
only in that directory, cannot open TCP connections and cannot signal other processes. This
guards against accidents and careless code (infinite loops, runaway memory, stray writes,
network calls); it is not a hardened sandbox (reads are not restricted, UDP is not covered).
"""
from __future__ import annotations

import re
import resource
import subprocess
import sys
import tempfile

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
        try:
            done = subprocess.run([sys.executable, "-I", "-c", f"{code}\n\n{tests}\n"], cwd=tmp, env={},
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=timeout, preexec_fn=_limits(memory_mb, int(timeout) + 1, tmp))
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
