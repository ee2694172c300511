"""Files and trees: temp dirs, file helpers, and the mount-versus-SOURCE comparisons.

Contract:
- tmpdir() makes a fresh 0755 directory (under EFSCACHE_TEST_TMP, default /tmp) that
  cleanup removes after everything mounted below it is gone (stage 30, after workers and
  mounts); a directory that still has a mount below it is reported as a failed check and
  left in place, never removed through a live mount.
- compare_stat()/compare_tree() record one check each and return its result; the
  fields compared are STAT_FIELDS unless given.
- make_random_file() is deterministic for a given seed (seed=None: os.urandom).
"""

import hashlib
import os
import shutil
import stat as _stat
import struct
import subprocess
import tempfile

from .checks import check, on_cleanup
from .mountinfo import mounts_under

__all__ = ["tmpdir", "mkdirs", "write_file", "read_file", "sha256_file", "make_random_file",
           "STAT_FIELDS", "stat_dict", "compare_stat", "compare_tree"]

_tmpdirs = []


def tmpdir(prefix="efscache-it-"):
    """A fresh directory (mode 0755 so a non-root test user can traverse it), removed at
    exit after everything mounted below it is unmounted."""
    d = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("EFSCACHE_TEST_TMP", "/tmp"))
    os.chmod(d, 0o755)
    d = os.path.realpath(d)
    _tmpdirs.append(d)
    return d


def _remove_tmpdirs():
    for d in reversed(list(_tmpdirs)):
        left = mounts_under(d)
        for mm in sorted(left, key=lambda x: -len(x["mountpoint"])):
            subprocess.run(["fusermount3", "-u", "-z", mm["mountpoint"]], capture_output=True)
            subprocess.run(["umount", "-l", mm["mountpoint"]], capture_output=True)
        if mounts_under(d):
            check("cleanup: nothing left mounted under %s" % d, False,
                  str([x["mountpoint"] for x in mounts_under(d)]))
            continue
        shutil.rmtree(d, ignore_errors=True)
        _tmpdirs.remove(d)


on_cleanup(30, _remove_tmpdirs)


def mkdirs(*paths, mode=0o755):
    for p in paths:
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
    return paths[0] if len(paths) == 1 else paths


def write_file(path, data, mode=None):
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_random_file(path, size, seed=0):
    """A file of `size` pseudo-random bytes (fast: a 1 MiB random block, varied per MiB)."""
    block = bytearray(os.urandom(1 << 20)) if seed is None else bytearray(
        hashlib.shake_256(b"efscache-%d" % seed).digest(1 << 20))
    with open(path, "wb") as f:
        off = 0
        i = 0
        while off < size:
            n = min(len(block), size - off)
            struct.pack_into("<QQ", block, 0, i, seed or 0)
            f.write(block[:n])
            off += n
            i += 1


STAT_FIELDS = ("st_mode", "st_uid", "st_gid", "st_size", "st_nlink", "st_mtime_ns", "st_ctime_ns")


def stat_dict(st, fields=STAT_FIELDS):
    d = {f: getattr(st, f) for f in fields}
    if "st_mode" in d:
        d["st_mode"] = oct(d["st_mode"])
    return d


def compare_stat(name, mnt_path, src_path, fields=STAT_FIELDS, follow=False):
    """lstat (or stat) both paths; the chosen fields must be equal."""
    try:
        a = os.stat(mnt_path, follow_symlinks=follow)
    except OSError as e:
        return check(name, False, "stat through the mount failed: %s" % e)
    b = os.stat(src_path, follow_symlinks=follow)
    da, db = stat_dict(a, fields), stat_dict(b, fields)
    diff = {k: (da[k], db[k]) for k in da if da[k] != db[k]}
    return check(name, not diff, "mount vs source differ: %s" % diff)


def compare_tree(name, mnt_root, src_root, fields=STAT_FIELDS):
    """Walk both trees: same names per directory, same lstat fields, same symlink targets,
    same file bytes (small files), and inode numbers that map one-to-one (hard links share
    an inode through the mount exactly when they do in SOURCE)."""
    problems = []
    ino_map = {}
    rev_map = {}
    for dirpath, dirnames, filenames in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        mdir = os.path.normpath(os.path.join(mnt_root, rel))
        try:
            mnames = sorted(os.listdir(mdir))
        except OSError as e:
            problems.append("listdir %s: %s" % (rel, e))
            continue
        snames = sorted(dirnames + filenames)
        if mnames != snames:
            problems.append("%s: names differ: only in mount %s, only in source %s" % (
                rel, sorted(set(mnames) - set(snames))[:5], sorted(set(snames) - set(mnames))[:5]))
        for n in snames + (["."] if rel == "." else []):
            sp = os.path.normpath(os.path.join(dirpath, n))
            mp = os.path.normpath(os.path.join(mdir, n))
            try:
                ms = os.lstat(mp)
            except OSError as e:
                problems.append("lstat %s: %s" % (os.path.join(rel, n), e))
                continue
            ss = os.lstat(sp)
            da, db = stat_dict(ms, fields), stat_dict(ss, fields)
            diff = {k: (da[k], db[k]) for k in da if da[k] != db[k]}
            if diff:
                problems.append("%s: mount vs source %s" % (os.path.join(rel, n), diff))
            if ss.st_ino in ino_map and ino_map[ss.st_ino] != ms.st_ino:
                problems.append("%s: source inode %d shows as mount inodes %d and %d" % (
                    os.path.join(rel, n), ss.st_ino, ino_map[ss.st_ino], ms.st_ino))
            if ms.st_ino in rev_map and rev_map[ms.st_ino] != ss.st_ino:
                problems.append("%s: mount inode %d stands for source inodes %d and %d" % (
                    os.path.join(rel, n), ms.st_ino, rev_map[ms.st_ino], ss.st_ino))
            ino_map[ss.st_ino] = ms.st_ino
            rev_map[ms.st_ino] = ss.st_ino
            if _stat.S_ISLNK(ss.st_mode):
                try:
                    if os.readlink(mp) != os.readlink(sp):
                        problems.append("%s: symlink target %r vs %r" % (
                            n, os.readlink(mp), os.readlink(sp)))
                except OSError as e:
                    problems.append("readlink %s: %s" % (n, e))
            elif _stat.S_ISREG(ss.st_mode) and ss.st_size <= (1 << 20):
                try:
                    if read_file(mp) != read_file(sp):
                        problems.append("%s: contents differ" % n)
                except OSError as e:
                    problems.append("read %s: %s" % (n, e))
    return check(name, not problems, "\n".join(problems[:20]))
