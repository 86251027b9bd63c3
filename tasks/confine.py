"""Landlock confinement for a child process: no capabilities, writes only beneath one folder, no TCP, no signals
out; and a seccomp filter that lets a process start no other process, change no file's metadata, take no file
lock and open no socket but an IPv4/IPv6 one (`no_new_processes`).

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
            "new_processes": "denied (seccomp)" if platform.machine() in _SYSCALLS else "allowed",
            "capabilities": "dropped"}


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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities() -> None:
    """Give up every capability, for good (bounding, ambient, permitted, effective, inheritable): a child run
    as root in a container otherwise keeps root's powers beyond file permissions (raw sockets, fanotify, a
    file's immutable flag, mounts). A process without capabilities loses nothing here."""
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows (EPERM: not ours to drop, we have none)
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if _libc.capset(ctypes.byref(_CapHeader(_CAPABILITY_VERSION_3, 0)), (_CapData * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def confine(folder: str, devnull: bool = False) -> None:
    """Confine the calling process (and its future children) as the module docstring says: capabilities dropped,
    Landlock, then the seccomp filter (`no_new_processes`); with `devnull`, /dev/null may be opened for writing too
    (libraries such as dill probe it at import). Landlock's part is a no-op without Landlock; raises OSError if
    Landlock is there but refuses."""
    drop_capabilities()
    _landlock(folder, devnull)
    no_new_processes()


def _landlock(folder: str, devnull: bool) -> None:
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


# seccomp: fork, vfork and a clone without CLONE_THREAD fail with EPERM (threads are still allowed); clone3
# says ENOSYS, so the C library falls back to clone, whose flags the filter can read. A process-count rlimit
# would not do: it does not bind root, which is who runs this in containers. Landlock leaves a file's metadata
# and locks alone, so these fail with EPERM too: changing a file's mode, owner, times or extended attributes
# (a process owns root's files when it runs as root), file locks (flock, fcntl's; a read-only descriptor is
# enough to hold the lock of a results folder), fanotify (which can block every open of a file), and sockets
# other than IPv4/IPv6 ones (a UNIX socket reaches any listener by path; Landlock covers TCP).
_SYSCALLS = {
    "x86_64": {"arch": 0xC000003E, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "fcntl": 72, "socket": 41,
               "deny": [90, 91, 268, 452,            # chmod, fchmod, fchmodat, fchmodat2
                        92, 93, 94, 260,             # chown, fchown, lchown, fchownat
                        132, 235, 261, 280,          # utime, utimes, futimesat, utimensat
                        188, 189, 190, 197, 198, 199, 463, 466,  # set/remove xattr (path, link, fd, at)
                        73, 300]},                   # flock, fanotify_init
    "aarch64": {"arch": 0xC00000B7, "fork": None, "vfork": None, "clone": 220, "clone3": 435, "fcntl": 25,
                "socket": 198,
                "deny": [52, 53, 452, 55, 54, 88, 5, 6, 7, 14, 15, 16, 463, 466, 32, 262]},
}
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LD_W_ABS, _JEQ_K, _JSET_K, _AND_K, _RET_K = 0x20, 0x15, 0x45, 0x54, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_CLONE_THREAD = 0x00010000
_LOCKS = (6, 7, 37, 38)  # F_SETLK, F_SETLKW and their open-file-description forms
_AF_INET, _AF_INET6, _SOCK_TYPE_MASK, _SOCK_RAW, _SOCK_PACKET = 2, 10, 0xF, 3, 10


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _program(n: dict) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) rows; jumps are written to labels and resolved to forward offsets."""
    rows: list[tuple] = []

    def op(code, k=0, jt=None, jf=None):  # jt/jf: a label, or None for the next row
        rows.append((code, jt, jf, k))

    op(_LD_W_ABS, 4)                                     # arch
    op(_JEQ_K, n["arch"], None, "allow")                 # another arch: allowed
    op(_LD_W_ABS, 0)                                     # syscall number
    for nr in [n["fork"], n["vfork"], *n["deny"]]:
        if nr is not None:
            op(_JEQ_K, nr, "deny")
    op(_JEQ_K, n["clone3"], "nosys")
    op(_JEQ_K, n["clone"], "clone")
    op(_JEQ_K, n["fcntl"], "fcntl")
    op(_JEQ_K, n["socket"], "socket")
    op(_RET_K, _ALLOW)
    labels = {"clone": len(rows)}
    op(_LD_W_ABS, 16)                                    # clone's flags (args[0], low 32 bits)
    op(_JSET_K, _CLONE_THREAD, "allow", "deny")
    labels["fcntl"] = len(rows)
    op(_LD_W_ABS, 24)                                    # fcntl's command (args[1])
    for cmd in _LOCKS:
        op(_JEQ_K, cmd, "deny")
    op(_RET_K, _ALLOW)
    labels["socket"] = len(rows)
    op(_LD_W_ABS, 16)                                    # socket's family (args[0])
    op(_JEQ_K, _AF_INET, "type")
    op(_JEQ_K, _AF_INET6, "type", "deny")
    labels["type"] = len(rows)
    op(_LD_W_ABS, 24)                                    # socket's type (args[1]) less its flags
    op(_AND_K, _SOCK_TYPE_MASK)
    op(_JEQ_K, _SOCK_RAW, "deny")
    op(_JEQ_K, _SOCK_PACKET, "deny", "allow")
    labels["allow"] = len(rows)
    op(_RET_K, _ALLOW)
    labels["deny"] = len(rows)
    op(_RET_K, _ERRNO | errno.EPERM)
    labels["nosys"] = len(rows)
    op(_RET_K, _ERRNO | errno.ENOSYS)
    return [(code, 0 if jt is None else labels[jt] - i - 1, 0 if jf is None else labels[jf] - i - 1, k)
            for i, (code, jt, jf, k) in enumerate(rows)]


def no_new_processes() -> None:
    """Install the seccomp filter in the calling process (and what it execs): no fork, vfork, or clone of a
    process (threads stay possible), none of the metadata, lock, fanotify or socket calls listed above. A
    no-op on an architecture the filter does not know."""
    n = _SYSCALLS.get(platform.machine())
    if n is None:
        return
    rows = _program(n)
    assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in rows)
    prog = (_SockFilter * len(rows))(*[_SockFilter(*r) for r in rows])
    fprog = _SockFprog(len(rows), prog)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
