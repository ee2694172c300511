#!/usr/bin/env python3
"""errno parity: each failing call is made through efscache and on SOURCE, each on its own
fresh copy of a small fixture tree; the errno values must be equal (and the expected one).
EACCES/EPERM cases as a non-root user are in test_perms.py."""

import os

import harness as h  # noqa: E402

h.require_fuse()
BASE, SRC, M = h.setup()
MNT = M.mnt

ENOENT, EPERM, EEXIST, ENOTDIR, EISDIR, EINVAL, EFBIG = 2, 1, 17, 20, 21, 22, 27
ENAMETOOLONG, ENOTEMPTY, ELOOP, ENODATA, EBADF, ENXIO = 36, 39, 40, 61, 9, 6
LONG = "L" * 256
MAX = "M" * 255


def fixture(d):
    os.mkdir(d)
    h.write_file(d + "/f", b"file contents\n")
    os.mkdir(d + "/d")
    h.write_file(d + "/d/x", b"x")
    os.mkdir(d + "/e")
    os.symlink("loop2", d + "/loop1")
    os.symlink("loop1", d + "/loop2")
    os.symlink("nowhere", d + "/dangling")
    os.mkfifo(d + "/fifo")


def op_open(flags):
    def f(p):
        os.close(os.open(p, flags, 0o644))
    return f


def read_fd(flags, fn):
    def f(p):
        fd = os.open(p, flags)
        try:
            fn(fd)
        finally:
            os.close(fd)
    return f


CASES = [
    # (name, function(dir), expected errno)
    ("stat of a missing name: ENOENT", lambda d: os.stat(d + "/missing"), ENOENT),
    ("open of a missing name: ENOENT", lambda d: op_open(os.O_RDONLY)(d + "/missing"), ENOENT),
    ("open in a missing directory: ENOENT", lambda d: op_open(os.O_CREAT | os.O_WRONLY)(
        d + "/missing/x"), ENOENT),
    ("open of a dangling symlink: ENOENT", lambda d: op_open(os.O_RDONLY)(d + "/dangling"),
     ENOENT),
    ("unlink of a missing name: ENOENT", lambda d: os.unlink(d + "/missing"), ENOENT),
    ("rmdir of a missing name: ENOENT", lambda d: os.rmdir(d + "/missing"), ENOENT),
    ("chmod of a missing name: ENOENT", lambda d: os.chmod(d + "/missing", 0o600), ENOENT),
    ("utime of a missing name: ENOENT", lambda d: os.utime(d + "/missing", None), ENOENT),
    ("readlink of a missing name: ENOENT", lambda d: os.readlink(d + "/missing"), ENOENT),
    ("rename of a missing name: ENOENT", lambda d: os.rename(d + "/missing", d + "/y"), ENOENT),
    ("link of a missing name: ENOENT", lambda d: os.link(d + "/missing", d + "/y"), ENOENT),
    ("stat below a file: ENOTDIR", lambda d: os.stat(d + "/f/x"), ENOTDIR),
    ("create below a file: ENOTDIR", lambda d: op_open(os.O_CREAT | os.O_WRONLY)(d + "/f/x"),
     ENOTDIR),
    ("mkdir below a file: ENOTDIR", lambda d: os.mkdir(d + "/f/x"), ENOTDIR),
    ("rmdir of a file: ENOTDIR", lambda d: os.rmdir(d + "/f"), ENOTDIR),
    ("listdir of a file: ENOTDIR", lambda d: os.listdir(d + "/f"), ENOTDIR),
    ("open O_DIRECTORY of a file: ENOTDIR", lambda d: op_open(os.O_RDONLY | os.O_DIRECTORY)(
        d + "/f"), ENOTDIR),
    ("rename a directory over a file: ENOTDIR", lambda d: os.rename(d + "/e", d + "/f"),
     ENOTDIR),
    ("open a directory O_WRONLY: EISDIR", lambda d: op_open(os.O_WRONLY)(d + "/d"), EISDIR),
    ("open a directory O_RDWR: EISDIR", lambda d: op_open(os.O_RDWR)(d + "/d"), EISDIR),
    ("open a directory O_CREAT: EISDIR", lambda d: op_open(os.O_CREAT | os.O_WRONLY)(d + "/d"),
     EISDIR),
    ("unlink of a directory: EISDIR", lambda d: os.unlink(d + "/d"), EISDIR),
    ("truncate of a directory: EISDIR", lambda d: os.truncate(d + "/d", 0), EISDIR),
    ("rename a file over a directory: EISDIR", lambda d: os.rename(d + "/f", d + "/e"), EISDIR),
    ("read(2) of a directory fd: EISDIR",
     lambda d: read_fd(os.O_RDONLY, lambda fd: os.read(fd, 10))(d + "/d"), EISDIR),
    ("mkdir of an existing directory: EEXIST", lambda d: os.mkdir(d + "/d"), EEXIST),
    ("mkdir of an existing file: EEXIST", lambda d: os.mkdir(d + "/f"), EEXIST),
    ("mkfifo of an existing name: EEXIST", lambda d: os.mkfifo(d + "/f"), EEXIST),
    ("symlink onto an existing name: EEXIST", lambda d: os.symlink("t", d + "/f"), EEXIST),
    ("symlink onto a dangling symlink: EEXIST", lambda d: os.symlink("t", d + "/dangling"),
     EEXIST),
    ("link onto an existing name: EEXIST", lambda d: os.link(d + "/f", d + "/d/x"), EEXIST),
    ("O_CREAT|O_EXCL of an existing file: EEXIST", lambda d: op_open(
        os.O_CREAT | os.O_EXCL | os.O_WRONLY)(d + "/f"), EEXIST),
    ("O_CREAT|O_EXCL of a dangling symlink: EEXIST", lambda d: op_open(
        os.O_CREAT | os.O_EXCL | os.O_WRONLY)(d + "/dangling"), EEXIST),
    ("rmdir of a non-empty directory: ENOTEMPTY", lambda d: os.rmdir(d + "/d"), ENOTEMPTY),
    ("rename a directory over a non-empty one: ENOTEMPTY",
     lambda d: os.rename(d + "/e", d + "/d"), ENOTEMPTY),
    ("rename a directory into itself: EINVAL", lambda d: os.rename(d + "/d", d + "/d/sub"),
     EINVAL),
    ("readlink of a regular file: EINVAL", lambda d: os.readlink(d + "/f"), EINVAL),
    ("rmdir of '.': EINVAL", lambda d: os.rmdir(d + "/e/."), EINVAL),
    ("link of a directory: EPERM", lambda d: os.link(d + "/d", d + "/dl"), EPERM),
    ("open through a symlink loop: ELOOP", lambda d: op_open(os.O_RDONLY)(d + "/loop1"), ELOOP),
    ("stat through a symlink loop: ELOOP", lambda d: os.stat(d + "/loop1"), ELOOP),
    ("O_NOFOLLOW open of a symlink: ELOOP", lambda d: op_open(os.O_RDONLY | os.O_NOFOLLOW)(
        d + "/dangling"), ELOOP),
    ("stat of a 256-char name: ENAMETOOLONG", lambda d: os.stat(d + "/" + LONG), ENAMETOOLONG),
    ("create of a 256-char name: ENAMETOOLONG", lambda d: op_open(os.O_CREAT | os.O_WRONLY)(
        d + "/" + LONG), ENAMETOOLONG),
    ("mkdir of a 256-char name: ENAMETOOLONG", lambda d: os.mkdir(d + "/" + LONG),
     ENAMETOOLONG),
    ("symlink named with 256 chars: ENAMETOOLONG", lambda d: os.symlink("t", d + "/" + LONG),
     ENAMETOOLONG),
    ("rename to a 256-char name: ENAMETOOLONG", lambda d: os.rename(d + "/f", d + "/" + LONG),
     ENAMETOOLONG),
    ("link to a 256-char name: ENAMETOOLONG", lambda d: os.link(d + "/f", d + "/" + LONG),
     ENAMETOOLONG),
    ("unlink of a 256-char name: ENAMETOOLONG", lambda d: os.unlink(d + "/" + LONG),
     ENAMETOOLONG),
    ("create of a 255-char name succeeds", lambda d: op_open(os.O_CREAT | os.O_WRONLY)(
        d + "/" + MAX), 0),
    ("mkdir of a 255-char name succeeds", lambda d: os.mkdir(d + "/" + MAX), 0),
    ("getxattr of a missing name: ENODATA", lambda d: os.getxattr(d + "/f", "user.none"),
     ENODATA),
    ("write(2) to an O_RDONLY fd: EBADF",
     lambda d: read_fd(os.O_RDONLY, lambda fd: os.write(fd, b"x"))(d + "/f"), EBADF),
    ("read(2) from an O_WRONLY fd: EBADF",
     lambda d: read_fd(os.O_WRONLY, lambda fd: os.read(fd, 1))(d + "/f"), EBADF),
    ("ftruncate to a negative size: EINVAL",
     lambda d: read_fd(os.O_WRONLY, lambda fd: os.ftruncate(fd, -1))(d + "/f"), EINVAL),
    ("truncate beyond the maximum file size: EFBIG", lambda d: os.truncate(d + "/f", 1 << 62),
     EFBIG),
    ("pwrite at an offset beyond the maximum file size: EFBIG",
     lambda d: read_fd(os.O_WRONLY, lambda fd: os.pwrite(fd, b"x", (1 << 44) + 4096))(
         d + "/f"), EFBIG),
    ("SEEK_DATA at EOF: ENXIO", lambda d: read_fd(
        os.O_RDONLY, lambda fd: os.lseek(fd, 14, os.SEEK_DATA))(d + "/f"), ENXIO),
    ("SEEK_HOLE beyond EOF: ENXIO", lambda d: read_fd(
        os.O_RDONLY, lambda fd: os.lseek(fd, 1000, os.SEEK_HOLE))(d + "/f"), ENXIO),
    ("open of a FIFO O_WRONLY|O_NONBLOCK without a reader: ENXIO",
     lambda d: op_open(os.O_WRONLY | os.O_NONBLOCK)(d + "/fifo"), ENXIO),
    ("fallocate with an invalid mode: same errno as SOURCE", lambda d: read_fd(
        os.O_RDWR, lambda fd: h.fallocate(fd, 0x7f00, 0, 4096))(d + "/f"), None),
]


def test_errno_parity():
    for i, (name, fn, expected) in enumerate(CASES):
        sd = os.path.join(SRC, "c%02d-src" % i)
        md_src = os.path.join(SRC, "c%02d-mnt" % i)
        fixture(sd)
        fixture(md_src)
        md = os.path.join(MNT, "c%02d-mnt" % i)
        got = h.errno_of(fn, md)
        ref = h.errno_of(fn, sd)
        ok = got == ref and (expected is None or got == expected)
        h.check(name, ok, "mount %s, source %s%s" % (
            h.ename(got), h.ename(ref),
            "" if expected is None else ", expected %s" % h.ename(expected)))
    # the source trees must still look alike after the same (failed or not) calls
    bad = []
    for i in range(len(CASES)):
        a = sorted(os.listdir(os.path.join(SRC, "c%02d-mnt" % i)))
        b = sorted(os.listdir(os.path.join(SRC, "c%02d-src" % i)))
        if a != b:
            bad.append((CASES[i][0], a, b))
    h.check("after each call the fixture in SOURCE looks the same either way", not bad, bad[:3])


h.run_tests([test_errno_parity])
