#!/usr/bin/env python3
"""Nothing escapes SOURCE (DESIGN rule 18; issue 15, H4).

The kernel caches "no such name" (a negative entry) for the directory's window.  If
another host puts a symlink at that name meanwhile, the next create through the mount
reaches the daemon as CREATE of a name it believes absent.  Before the fix, src_create
opened it without O_NOFOLLOW: the daemon followed the link *on the source side*, in its
own mount namespace, and wrote (or truncated) a file outside SOURCE.  Now the daemon never
follows nor opens what it did not create: the kernel is told to look the name up again
(ESTALE), finds the symlink in the mount and follows it itself, in the caller's namespace
and with the caller's rights, as an NFS client does; O_EXCL gets EEXIST, as on SOURCE.

A relative link tells the two apart: SRC/d/out -> ../../outside/victim resolves to
BASE/s/outside/victim on the source side and to BASE/m/outside/victim through the mount.

The same window with a FIFO: the daemon must not open a FIFO planted at the name (it would
wait for a writer for ever, a worker lost); nor when a cached file's name now leads to a
FIFO (the open by name of a file that must be fetched)."""

import os
import stat
import threading
import time

import harness as h

h.require_fuse()

BASE = h.tmpdir("efscache-escape-")
SRC = os.path.join(BASE, "s", "src")
MNT = os.path.join(BASE, "m", "mnt")
SRC_OUT = os.path.join(BASE, "s", "outside")
MNT_OUT = os.path.join(BASE, "m", "outside")
h.mkdirs(SRC, MNT, SRC_OUT, MNT_OUT, os.path.join(SRC, "d"))
M = h.mount_efscache(SRC, MNT)  # default windows: names and "no such name" kept 30-60 s


def negative(rel):
    """Make the kernel cache "no such name" for rel."""
    h.check("%s is absent through the mount (a negative entry now)" % rel,
            not os.path.exists(os.path.join(MNT, rel)))


def test_create_over_planted_symlink():
    victim_src = os.path.join(SRC_OUT, "victim")
    victim_mnt = os.path.join(MNT_OUT, "victim")
    h.write_file(victim_src, b"precious\n")
    h.write_file(victim_mnt, b"the caller's\n")
    negative("d/out.log")
    os.symlink("../../outside/victim", os.path.join(SRC, "d", "out.log"))
    err = h.errno_of(h.write_file, os.path.join(MNT, "d", "out.log"), b"x\n")
    h.eq("echo x > MNT/d/out.log (a symlink planted on the source): succeeds as on SOURCE",
         h.ename(err), h.ename(0))
    h.eq("the file outside SOURCE (the link resolved on the source side) is untouched",
         h.read_file(victim_src), b"precious\n")
    h.eq("the link was followed through the mount, as the caller's kernel resolves it",
         h.read_file(victim_mnt), b"x\n")
    h.check("the symlink on SOURCE is still a symlink",
            os.path.islink(os.path.join(SRC, "d", "out.log")))


def test_create_excl_over_planted_symlink():
    victim_src = os.path.join(SRC_OUT, "victim2")
    h.write_file(victim_src, b"precious\n")
    negative("d/excl")
    os.symlink("../../outside/victim2", os.path.join(SRC, "d", "excl"))
    err = h.errno_of(os.open, os.path.join(MNT, "d", "excl"),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_TRUNC, 0o644)
    ref = h.errno_of(os.open, os.path.join(SRC, "d", "excl"),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_TRUNC, 0o644)
    h.eq("O_CREAT|O_EXCL over a planted symlink: the errno SOURCE gives", h.ename(err),
         h.ename(ref))
    h.eq("... and the file outside SOURCE is untouched", h.read_file(victim_src),
         b"precious\n")


def test_create_over_dangling_symlink():
    negative("d/dangling")
    os.symlink("../../outside/not-there", os.path.join(SRC, "d", "dangling"))
    fd = os.open(os.path.join(MNT, "d", "dangling"), os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    h.check("O_CREAT over a planted dangling symlink creates nothing on the source side",
            not os.path.exists(os.path.join(SRC_OUT, "not-there")))
    h.check("... the caller's kernel followed it through the mount",
            os.path.exists(os.path.join(MNT_OUT, "not-there")))


def open_in_thread(path, flags):
    res = {}

    def run():
        try:
            fd = os.open(path, flags, 0o644)
            res["fd"] = fd
        except OSError as e:
            res["err"] = e.errno

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res


def test_create_over_planted_fifo():
    negative("d/fifo")
    os.mkfifo(os.path.join(SRC, "d", "fifo"))
    # A writer without O_NONBLOCK waits for a reader: in the caller's kernel, through the
    # mount, never in the daemon.
    t, res = open_in_thread(os.path.join(MNT, "d", "fifo"), os.O_CREAT | os.O_WRONLY)
    time.sleep(0.5)
    # The reader through the mount: once the writer's open found the FIFO, the name is
    # no longer negative and this open meets it in the mount's kernel.
    rfd = None
    for _ in range(100):
        try:
            rfd = os.open(os.path.join(MNT, "d", "fifo"), os.O_RDONLY | os.O_NONBLOCK)
            break
        except FileNotFoundError:
            time.sleep(0.1)
    t.join(10 * h.TIMEOUT_SCALE)
    stuck = t.is_alive()
    if stuck:
        # Before the fix the daemon itself waits in open(2) of the source's FIFO: a
        # reader on the source side lets it go.
        sfd = os.open(os.path.join(SRC, "d", "fifo"), os.O_RDONLY | os.O_NONBLOCK)
        t.join(10)
        os.close(sfd)
    h.check("O_CREAT|O_WRONLY over a FIFO planted on the source: the caller meets the FIFO "
            "through the mount (the daemon never opens it)",
            not stuck and "fd" in res and rfd is not None, res)
    for fd in (res.get("fd"), rfd):
        if fd is not None:
            os.close(fd)


def test_open_of_file_replaced_by_fifo():
    p = os.path.join(SRC, "d", "was-a-file")
    h.write_file(p, b"z" * (3 << 20))
    with open(os.path.join(MNT, "d", "was-a-file"), "rb") as f:
        f.read(4096)  # known to the kernel, a little of it cached
    os.unlink(p)
    os.mkfifo(p)
    t, res = open_in_thread(os.path.join(MNT, "d", "was-a-file"),
                            os.O_RDONLY | os.O_NONBLOCK)
    t.join(10 * h.TIMEOUT_SCALE)
    stuck = t.is_alive()
    if stuck:
        wfd = os.open(p, os.O_RDWR)  # lets a daemon that opened the FIFO go
        t.join(10)
        os.close(wfd)
    h.check("a cached file replaced by a FIFO on the source: the open does not hang in the "
            "daemon", not stuck, res)
    fd = res.get("fd")
    if fd is not None:
        h.check("... and opens the FIFO, as on SOURCE", stat.S_ISFIFO(os.fstat(fd).st_mode),
                oct(os.fstat(fd).st_mode))
        os.close(fd)


h.run_tests([test_create_over_planted_symlink, test_create_excl_over_planted_symlink,
             test_create_over_dangling_symlink, test_create_over_planted_fifo,
             test_open_of_file_replaced_by_fifo])
