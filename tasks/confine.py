"""Landlock confinement for a child process: writes only beneath one folder, no TCP, no signals out; and a
seccomp filter that lets a process start no other process (`no_new_processes`).

Landlock (Linux 5.13+, unprivileged) lets a process give up rights for itself and its children.
`confine(folder)` is meant to run in the child between fork and exec (subprocess's preexec_fn):
after it, the process can create, write, truncate or remove files only beneath `folder`
(reading stays allowed, so the interpreter still starts), and, where the kernel's Landlock ABI
allows, cannot bind or connect TCP sockets (ABI 4, Linux 6.7) nor signal processes or reach
abstract UNIX sockets outside its own domain (ABI 6, Linux 6.12). UDP is not covered by
Landlock. On a kernel without Landlock nothing is confined; `available()` says what will be.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # syscall numbers, the same on every arch
_VERSION = 1 << 0  # LANDLOCK_CREATE_RULESET_VERSION
_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_*: every right that changes the filesystem (REFER, cross-folder renames, is
# left unhandled: with no rule allowing it the kernel refuses those renames and links anyway).
_WRITE_FILE, _REMOVE_DIR, _REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
_MAKE = sum(1 << b for b in range(6, 13))  # MAKE_CHAR, DIR, REG, SOCK, FIFO, BLOCK, SYM
_TRUNCATE = 1 << 14  # ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    version = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return max(int(version), 0)


def available() -> dict:
    """What `confine` and `no_new_processes` enforce on this kernel (stored with results that ran model-written
    code)."""
    v = abi()
    return {"landlock_abi": v, "writes_outside_folder": "denied" if v >= 1 else "allowed",
            "tcp": "denied" if v >= 4 else "allowed", "signals_out": "denied" if v >= 6 else "allowed",
            "new_processes": "denied (seccomp)" if platform.machine() in _SYSCALLS else "allowed"}


def _fs_rights(v: int) -> int:
    return _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE | (_TRUNCATE if v >= 3 else 0)


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if _libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_PATH_BENEATH), ctypes.byref(rule),
                         ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule for {path} failed")
    finally:
        os.close(fd)


def confine(folder: str, devnull: bool = False) -> None:
    """Confine the calling process (and its future children) as the module docstring says; with `devnull`,
    /dev/null may be opened for writing too (libraries such as dill probe it at import).
    A no-op without Landlock; raises OSError if Landlock is there but refuses."""
    v = abi()
    if v < 1:
        return
    attr = _RulesetAttr(handled_access_fs=_fs_rights(v),
                        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if v >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if v >= 6 else 0)
    # an older kernel accepts the longer struct as long as the fields it does not know are zero
    ruleset = _libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                            ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        _allow(ruleset, folder, _fs_rights(v))
        if devnull:
            _allow(ruleset, os.devnull, _WRITE_FILE | (_TRUNCATE if v >= 3 else 0))
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


# seccomp: fork, vfork and a clone without CLONE_THREAD fail with EAGAIN (threads are still allowed); clone3
# says ENOSYS, so the C library falls back to clone, whose flags the filter can read. A process-count rlimit
# would not do: it does not bind root, which is who runs this in containers.
_SYSCALLS = {"x86_64": {"arch": 0xC000003E, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435},
             "aarch64": {"arch": 0xC00000B7, "fork": None, "vfork": None, "clone": 220, "clone3": 435}}
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_CLONE_THREAD = 0x00010000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _program(n: dict) -> list[tuple[int, int, int, int]]:
    never = 0xFFFFFFFF  # a syscall number that does not exist (aarch64 has no fork or vfork)
    return [
        (_LD_W_ABS, 0, 0, 4),                           # 0: arch
        (_JEQ_K, 0, 7, n["arch"]),                      # 1: another arch -> allow (9)
        (_LD_W_ABS, 0, 0, 0),                           # 2: syscall number
        (_JEQ_K, 6, 0, n["fork"] or never),             # 3: fork -> deny (10)
        (_JEQ_K, 5, 0, n["vfork"] or never),            # 4: vfork -> deny (10)
        (_JEQ_K, 5, 0, n["clone3"]),                    # 5: clone3 -> ENOSYS (11)
        (_JEQ_K, 0, 2, n["clone"]),                     # 6: not clone -> allow (9)
        (_LD_W_ABS, 0, 0, 16),                          # 7: its flags (args[0], low 32 bits)
        (_JSET_K, 0, 1, _CLONE_THREAD),                 # 8: a thread -> allow (9), else deny (10)
        (_RET_K, 0, 0, _ALLOW),                         # 9
        (_RET_K, 0, 0, _ERRNO | errno.EAGAIN),          # 10
        (_RET_K, 0, 0, _ERRNO | errno.ENOSYS),          # 11
    ]


def no_new_processes() -> None:
    """Install the seccomp filter in the calling process (and what it execs): no fork, vfork, or clone of a
    process; threads stay possible. A no-op on an architecture the filter does not know."""
    n = _SYSCALLS.get(platform.machine())
    if n is None:
        return
    rows = _program(n)
    prog = (_SockFilter * len(rows))(*[_SockFilter(*r) for r in rows])
    fprog = _SockFprog(len(rows), prog)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
