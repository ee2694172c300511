"""What is mounted where, read from /proc/self/mountinfo.

Contract: pure readers, no side effects, never touch the file system below a mountpoint
(a hung FUSE mount must not hang the test's bookkeeping): paths are canonicalized
lexically (canon()), which is exact for the symlink-free paths tmpdir() makes.
mounts() returns one dict per line: id, dev, root, mountpoint, opts, fstype, source,
superopts, with the kernel's octal escapes undone.
"""

import os

__all__ = ["mounts", "canon", "mounts_at", "fuse_mounts_at", "mounts_under", "is_mounted"]

def _unescape(s):
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts():
    """List of dicts (id, dev, mountpoint, opts, fstype, source, superopts)."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            res.append({
                "id": int(fields[0]),
                "dev": fields[2],
                "root": _unescape(fields[3]),
                "mountpoint": _unescape(fields[4]),
                "opts": fields[5],
                "fstype": fields[sep + 1],
                "source": _unescape(fields[sep + 2]),
                "superopts": fields[sep + 3] if len(fields) > sep + 3 else "",
            })
    return res


def canon(path):
    """Absolute, normalized path WITHOUT touching the file system (a hung FUSE mount
    would block a stat/realpath of its mountpoint).  Paths made by tmpdir() are already
    free of symlinks."""
    return os.path.normpath(os.path.abspath(path))


def mounts_at(path):
    path = canon(path)
    return [m for m in mounts() if m["mountpoint"] == path]


def fuse_mounts_at(path):
    return [m for m in mounts_at(path) if m["fstype"].startswith("fuse")]


def mounts_under(base):
    base = base.rstrip("/") + "/"
    return [m for m in mounts() if (m["mountpoint"] + "/").startswith(base)]


def is_mounted(path):
    return bool(fuse_mounts_at(path))
