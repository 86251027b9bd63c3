"""Code clbench did not write runs only in a confined child process, never where scores are computed.

A method that is not a built-in (methods.registry.BUILTIN: a submitted `file.py:Class`, an installed
plugin) is never imported by the driver, a Ray worker or anything that scores:

- `info(target, overrides, where)`: what a method declares (name, description, citation, needs, its
  config resolved with defaults), the config checks' problems included. A built-in is imported here;
  any other target is imported by a child (`describe`) that reports as JSON, with a timeout, so an
  import that hangs, exits or crashes is named in one line before any compute.
- training: `SandboxedTrainer` (harness.run.sandboxed) has a child run the method's hooks and training stage
  by stage and hand the model over as plain weights of the base architecture, scored by the parent.

Every child starts in a new session, its process group killed when it is done, with none of the caller's
environment but what locates data, caches and libraries; it has no capabilities, Landlock confines it to
write only beneath its scratch folder and open no TCP connection, and a seccomp filter lets it start no
process, change no file's metadata, take no lock and open no socket but an IPv4/IPv6 one (tasks/confine.py);
what it leaves is read as a regular file, copied, on the open descriptor; its stdout and
stderr go to a log in that folder, and it reports over a pipe of its own (JSON lines of at most 1 MB),
so what a method prints cannot pass for a message. Each message is checked before use. This keeps
scores and the results folder out of the method's reach; it is not a hardened sandbox (reads are not
restricted, nor memory and disk, see tasks/code_exec.py), and what a child reports of its training is its word:
losses, steps, tokens, parameter counts and peak memory (so the board's training-TFLOPs estimate for a
submitted method is too; its training seconds are the parent's clock).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from methods.registry import BUILTIN
from tasks.confine import confine

from ..core.errors import ConfigError
from ..core.json_file import Refused, read_regular

DESCRIBE_TIMEOUT = 300.0  # seconds for a child to import a method and check it (with the tiny-model trial)
STAGE_TIMEOUT = 6 * 3600.0  # seconds for a child's prepare or one stage of training (resources.stage_hours)
# seconds a child may use no CPU at all while the parent waits for its message: a method that sleeps, deadlocks or
# blocks on something that never comes fails after this, not after STAGE_TIMEOUT. Training and scoring use CPU
# time (a GPU's host thread spins or yields while it waits for the device); ten minutes without any would be a
# read stalled that long (a network filesystem gone)
IDLE_LIMIT = 600.0
MAX_MESSAGE = 1 << 20  # bytes in one message
MAX_TEXT = 4000  # characters kept of a string a child reports
# the variables a child inherits: paths, locale, threads, devices and the caches' places (never HF_TOKEN)
ENV_KEEP = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "HF_HOME",
            "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "TOKENIZERS_PARALLELISM"}
ENV_KEEP_PREFIXES = ("CLBENCH_", "LC_", "OMP_", "MKL_", "KMP_", "NVIDIA_", "CUDA_")


class SandboxError(RuntimeError):
    """A child process broke its protocol: it exited, hung, or sent something malformed."""


class MethodFailed(SandboxError):
    """The method raised in its child: `error` is the child's 'Type: message', `child_traceback` its traceback."""

    def __init__(self, error: str, child_traceback: str):
        super().__init__(error)
        self.error, self.child_traceback = error, child_traceback


def trusted(target: str) -> bool:
    """Built-in methods run in-process; everything else in a child."""
    return target in BUILTIN


def _env(scratch: Path) -> dict:
    """The child's environment: what locates the data, the caches and the libraries and sets the threads, not
    the caller's other variables (a token or a password there is no method's business)."""
    keep = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
    return dict(keep, TMPDIR=str(scratch), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1",
                PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


class Child:
    """One confined child process running `harness.sandbox_child COMMAND` on a JSON request."""

    def __init__(self, command: str, request: dict, scratch: Path):
        self.scratch, self.log = scratch, scratch / "child.log"
        read_fd, write_fd = os.pipe()
        try:
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "harness.sandbox_child", command, str(write_fd)], cwd=scratch,
                    env=_env(scratch), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,), start_new_session=True,
                    preexec_fn=lambda: confine(str(scratch), devnull=True))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.fd, self.buffer = read_fd, b""
        self.send(request)

    def send(self, message: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SandboxError(self._ended()) from None

    def receive(self, timeout: float) -> dict:
        """The child's next message; SandboxError when it exits, stays silent past `timeout`, uses no CPU for
        IDLE_LIMIT seconds before it sends, or sends garbage."""
        deadline = time.monotonic() + timeout
        busy = (self.cpu_seconds(), time.monotonic())  # the child's CPU time, and when it last changed
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_MESSAGE:
                raise SandboxError(f"sent a message over {MAX_MESSAGE} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"sent nothing within {timeout:.0f} s (a hang or a sleep?)")
            if select.select([self.fd], [], [], min(left, IDLE_LIMIT / 10))[0]:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise SandboxError(self._ended())
                self.buffer += chunk
                continue
            cpu, now = self.cpu_seconds(), time.monotonic()
            if cpu != busy[0]:
                busy = (cpu, now)
            elif cpu is not None and now - busy[1] >= IDLE_LIMIT:
                raise SandboxError(f"used no CPU for {now - busy[1]:.0f} s and sent nothing (asleep, deadlocked or "
                                   "waiting for something that never comes?)")
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise SandboxError("sent a message that is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
            raise SandboxError("sent a message that is not an object with a 'kind'")
        if message["kind"] == "error":
            raise MethodFailed(_text(message.get("error")), _text(message.get("traceback")))
        return message

    def _ended(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        tail = self.log_tail().strip()
        return f"exited (code {self.proc.returncode}) before reporting" + (f"; the end of its output:\n{tail}" if tail else "")

    def cpu_seconds(self) -> float | None:
        """The CPU time the child has used (user and system, all its threads), as the kernel counts it; None where
        it cannot be read."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return None

    def peak_rss_mb(self) -> float | None:
        """The child's peak resident memory so far, as the kernel counts it (VmHWM; the confined child cannot write
        /proc/self/clear_refs to reset it); None where it cannot be read."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
        return None

    def log_tail(self, size: int = 2000) -> str:
        """The end of the child's log; '' where the child left something else there (a FIFO would hang this)."""
        with contextlib.suppress(OSError, Refused):
            return read_regular(self.log, size, tail=True, follow=False).decode("utf-8", "replace")
        return ""

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child and everything it started
        self.proc.wait()
        os.close(self.fd)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


def _text(value) -> str:
    return str(value)[:MAX_TEXT]


def _json_value(value, depth: int = 0) -> bool:
    """A plain JSON value (what a method config or stats may hold), nested at most 8 deep."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if depth >= 8:
        return False
    if isinstance(value, list):
        return all(_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v, depth + 1) for k, v in value.items())
    return False


# describe: what an untrusted method declares ---------------------------------------------------------------

_DESCRIBED: dict = {}  # key -> ((source, root), description): one child per file, config and trial per process


def _file_digest(target: str) -> str:
    path = Path(target.rpartition(":")[0]) if ".py:" in target else None
    with contextlib.suppress(OSError):
        return hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else ""
    return ""


def absolute(target: str) -> str:
    """A 'file.py:Class' target (or a 'file.py' given without its class) with its path made absolute (a child
    runs in its scratch folder)."""
    if target.endswith(".py"):
        return str(Path(target).resolve())
    if ".py:" not in target:
        return target
    path, _, cls = target.rpartition(":")
    return f"{Path(path).resolve()}:{cls}"


def describe(target: str, overrides=None, source: str = "method config", *, root: bool = True, trial: bool = False,
             data_dir=None, timeout: float = DESCRIBE_TIMEOUT) -> dict:
    """{name, class, description, citation, needs, config, source_file, problems} of a method, from a child
    that imports it (and, with `trial`, runs it on the tiny model); ConfigError when the child fails. `source`
    names where the overrides came from in error messages: a file (`root`: 'overrides.yaml: ratio') or, with
    root=False, a field of a card ('methods[0].config.ratio')."""
    key = (target, _file_digest(target), json.dumps(overrides, sort_keys=True, default=str), trial, str(data_dir))
    said = _DESCRIBED.get(key)
    if said is not None and (not said[1]["problems"] or said[0] == (source, root)):  # problems name their source
        return said[1]
    request = {"target": absolute(target), "overrides": overrides or {}, "source": source, "root": root, "trial": trial,
               "data_dir": str(data_dir) if data_dir else None}
    with tempfile.TemporaryDirectory(prefix="clbench-method-", ignore_cleanup_errors=True) as tmp:
        child = None
        try:
            child = Child("describe", request, Path(tmp))
            message = child.receive(timeout)
        except MethodFailed as e:
            raise ConfigError(f"{target}: importing and checking it in a separate process failed: {e}") from None
        except SandboxError as e:
            raise ConfigError(f"{target}: importing and checking it in a separate process {e}") from None
        finally:
            if child:
                child.close()
    described = _checked_description(message, target)
    _DESCRIBED[key] = ((source, root), described)
    return described


def _checked_description(m: dict, target: str) -> dict:
    problems = m.get("problems")
    if not (isinstance(problems, list) and all(isinstance(p, str) for p in problems)):
        raise ConfigError(f"{target}: its checking process sent a malformed report")
    needs = m.get("needs") if isinstance(m.get("needs"), dict) else {}
    config = m.get("config")
    if config is not None and not (isinstance(config, dict) and _json_value(config)):
        problems = [*problems, f"{target}: its config does not resolve to plain JSON values"]
        config = None
    return {"name": _text(m.get("name", "")), "class": _text(m.get("class", "")),
            "description": _text(m.get("description", "")), "citation": _text(m.get("citation", "")),
            "needs": {k: bool(needs.get(k, False)) for k in ("gpu", "teacher", "quantized_base", "full_logits")},
            "config": config, "source_file": _text(m["source_file"]) if isinstance(m.get("source_file"), str) else None,
            "problems": [_text(p) for p in problems[:50]]}


def info(target: str, overrides=None, where: str = "method", timeout: float = DESCRIBE_TIMEOUT) -> dict:
    """What a method declares, as `describe` reports it (within `timeout` seconds); a built-in is imported in this
    process. Raises ConfigError naming every problem of the method or its config."""
    if trusted(target):
        import dataclasses

        from methods.registry import resolve_method

        from ..core.typed import build

        cls = resolve_method(target, where=where)
        config = dataclasses.asdict(build(cls.Config, overrides or {}, where.replace(".method", ".config")))
        return {"name": cls.name, "class": cls.__name__, "description": cls.description, "citation": cls.citation,
                "needs": dataclasses.asdict(cls.needs), "config": config, "source_file": None, "problems": []}
    from methods.registry import check_name

    check_name(target, where)  # a misspelt name is said here, once, before a child is started for it
    described = describe(target, overrides, where.replace(".method", ".config"), root=False, timeout=timeout)
    if described["problems"]:
        problems = (p.removeprefix(f"{target}: ") for p in described["problems"])  # each names the target once
        raise ConfigError(f"{where}: {target}: " + "; ".join(problems))
    return described
