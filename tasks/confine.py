"""Landlock confinement for a child process: writes only beneath one folder, no TCP, no signals out.

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
import functools
import os

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
    """What `confine` enforces on this kernel (stored with results that ran model-written code)."""
    v = abi()
    return {"landlock_abi": v, "writes_outside_folder": "denied" if v >= 1 else "allowed",
            "tcp": "denied" if v >= 4 else "allowed", "signals_out": "denied" if v >= 6 else "allowed"}


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
