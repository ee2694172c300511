"""Syscalls Python's os module does not wrap, called through ctypes (x86_64 numbers).

Contract: each wrapper takes paths as str or bytes, returns what the syscall returns (a
Statx, a Flock) and raises OSError with errno and path on failure, never returns -1.
Constants are the kernel's (linux/fcntl.h, linux/stat.h, linux/falloc.h).  No state, no
mounts: safe to call from forked workers.
"""

import ctypes
import ctypes.util
import fcntl as _fcntl
import os

__all__ = ["libc", "AT_FDCWD", "RENAME_NOREPLACE", "RENAME_EXCHANGE", "FALLOC_FL_KEEP_SIZE",
           "FALLOC_FL_PUNCH_HOLE", "UTIME_NOW", "UTIME_OMIT", "AT_SYMLINK_NOFOLLOW",
           "AT_STATX_FORCE_SYNC", "AT_STATX_DONT_SYNC", "STATX_BASIC_STATS", "Statx", "statx",
           "renameat2", "fallocate", "utimensat", "Flock", "fcntl_lock"]


libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100

_SYS_renameat2 = 316  # x86_64
_SYS_mknodat = 259


def _raise_errno(what, path=None):
    e = ctypes.get_errno()
    raise OSError(e, "%s: %s" % (what, os.strerror(e)), path)


AT_STATX_FORCE_SYNC = 0x2000
AT_STATX_DONT_SYNC = 0x4000
STATX_BASIC_STATS = 0x7ff


class Statx(ctypes.Structure):
    """struct statx (linux/stat.h), 256 bytes."""
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("_pad0", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime_sec", ctypes.c_int64), ("atime_nsec", ctypes.c_uint32),
                ("_pad1", ctypes.c_int32), ("btime_sec", ctypes.c_int64),
                ("btime_nsec", ctypes.c_uint32), ("_pad2", ctypes.c_int32),
                ("ctime_sec", ctypes.c_int64), ("ctime_nsec", ctypes.c_uint32),
                ("_pad3", ctypes.c_int32), ("mtime_sec", ctypes.c_int64),
                ("mtime_nsec", ctypes.c_uint32), ("_pad4", ctypes.c_int32),
                ("_rest", ctypes.c_uint64 * 16)]


def statx(path, flags=0, mask=STATX_BASIC_STATS, dirfd=AT_FDCWD):
    """glibc statx(2) (Python 3.11 has no os.statx); returns a Statx. flags e.g.
    AT_STATX_FORCE_SYNC | AT_SYMLINK_NOFOLLOW; path "" needs AT_EMPTY_PATH (0x1000)."""
    buf = Statx()
    if libc.statx(dirfd, os.fsencode(path), flags, mask, ctypes.byref(buf)) != 0:
        _raise_errno("statx", path)
    return buf


def renameat2(old, new, flags):
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(_SYS_renameat2), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(os.fsencode(old)), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(os.fsencode(new)), ctypes.c_uint(flags))
    if r != 0:
        _raise_errno("renameat2", old)


def fallocate(fd, mode, offset, length):
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    r = libc.fallocate(fd, mode, offset, length)
    if r != 0:
        _raise_errno("fallocate")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) tuples, or UTIME_NOW / UTIME_OMIT."""
    ts = (_Timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if t in (UTIME_NOW, UTIME_OMIT):
            ts[i].tv_sec, ts[i].tv_nsec = 0, t
        else:
            ts[i].tv_sec, ts[i].tv_nsec = t
    libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec),
                               ctypes.c_int]
    r = libc.utimensat(AT_FDCWD, os.fsencode(path), ts, flags)
    if r != 0:
        _raise_errno("utimensat", path)


class Flock(ctypes.Structure):
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64),
                ("l_pid", ctypes.c_int)]


def fcntl_lock(fd, cmd, ltype, start, length, whence=0):
    """fcntl(fd, cmd, struct flock) for F_GETLK/F_SETLK/F_SETLKW/F_OFD_*; returns the
    (possibly updated) Flock."""
    fl = Flock(ltype, whence, start, length, 0)
    buf = bytes(fl) + b"\0" * 8
    out = _fcntl.fcntl(fd, cmd, buf)
    return Flock.from_buffer_copy(out[:ctypes.sizeof(Flock)])
