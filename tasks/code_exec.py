"""Run model-written code against tests in a separate, limited process.

Each program runs in `python -I` in its own temporary directory (removed afterwards),
with a wall-clock timeout, an address-space limit and a CPU-time limit, and an empty
environment. This is a guard against accidents (infinite loops, runaway memory), not a
security sandbox for hostile code.
"""
from __future__ import annotations

import re
import resource
import subprocess
import sys
import tempfile

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(reply: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    m = FENCE.search(reply)
    return m.group(1) if m else reply


def _limits(memory_mb: int, cpu_seconds: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    return apply


def passes(code: str, tests: str, timeout: float = 10.0, memory_mb: int = 1024) -> bool:
    """True when `code` followed by `tests` exits 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="clbench-exec-") as tmp:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", f"{code}\n\n{tests}\n"], cwd=tmp, env={},
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=timeout, preexec_fn=_limits(memory_mb, int(timeout) + 1))
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
