#!/usr/bin/env python3
"""One entry whose lookup fails never ends a listing (issue 15).

The kernel lists a FUSE directory with READDIRPLUS: names *and* attributes, so efscache
looks every entry up.  Before the fix, one entry whose lookup failed with anything but
ENOENT ended the listing there: the names after it were lost, and getdents failed.  Such
an entry is real: a mount inside SOURCE whose server died (ENOTCONN), a source refusing
one object, fd exhaustion.  Now the entry is listed without attributes (a stat of it then
gets the source's error, as on SOURCE) and the listing goes on.  A name that vanished
between the listing and its lookup is left out, as before.

The broken entry here: SOURCE/m-dead, a FUSE mount (efs-emu) whose daemon was killed,
among 200 names on both sides of it."""

import errno
import os

import harness as h

h.require_fuse()

BASE = h.tmpdir("efscache-rdplus-")
SRC = os.path.join(BASE, "src")
h.mkdirs(SRC, os.path.join(BASE, "other"))
NAMES = ["f%03d" % k for k in range(200)]
for n in NAMES:
    h.write_file(os.path.join(SRC, n), n.encode())
DEAD = os.path.join(SRC, "m-dead")
os.mkdir(DEAD)
EMU = h.mount_emu(os.path.join(BASE, "other"), DEAD)
M = h.mount_efscache(SRC, os.path.join(BASE, "mnt"))
# What a FUSE mount whose daemon died answers (kernels differ).
DEAD_ERRNOS = {errno.ENOTCONN, errno.ECONNABORTED}


def list_and_stat(path):
    """List path as `ls -l` does, stat'ing each entry as it comes (the kernel then asks
    READDIRPLUS for the following batches too, not only the first).  Returns (names,
    {name: size or errno}, the listing's errno or 0)."""
    names, sizes, err = [], {}, 0
    try:
        with os.scandir(path) as it:
            for e in it:
                names.append(e.name)
                try:
                    sizes[e.name] = e.stat(follow_symlinks=False).st_size
                except OSError as x:
                    sizes[e.name] = ("errno", x.errno)
    except OSError as x:
        err = x.errno
    return sorted(names), sizes, err


def test_dead_mount_in_listing():
    EMU.kill9()  # its mount stays, every request answered ENOTCONN (or ECONNABORTED)
    src_err = h.errno_of(os.stat, DEAD)
    h.check("on SOURCE the dead mount refuses a stat", src_err in DEAD_ERRNOS,
            h.ename(src_err))
    want = sorted(os.listdir(SRC))
    got, sizes, err = list_and_stat(M.mnt)
    h.eq("listing the mount (READDIRPLUS) with a dead mount among the entries: no error",
         h.ename(err), h.ename(0))
    h.check("... every name, as on SOURCE", got == want,
            "missing %s" % sorted(set(want) - set(got))[:10])
    h.check("... the entries around it have their attributes",
            all(sizes.get(n) == len(n) for n in NAMES),
            [n for n in NAMES if sizes.get(n) != len(n)][:5])
    dead = sizes.get("m-dead")
    h.check("... and a stat of the dead entry gets the source's error",
            isinstance(dead, tuple) and dead[1] in DEAD_ERRNOS, dead)


def test_vanished_names_skipped():
    d = os.path.join(SRC, "gone")
    os.mkdir(d)
    for k in range(50):
        h.write_file(os.path.join(d, "g%02d" % k), b"g")
    # the kernel holds no listing of it yet; remove half on the source after efscache
    # opened it: readdir of the stream still sees them (the stream was read whole at open
    # time only if small; either way a vanished name must not show)
    fd = os.open(os.path.join(M.mnt, "gone"), os.O_RDONLY | os.O_DIRECTORY)
    for k in range(0, 50, 2):
        os.unlink(os.path.join(d, "g%02d" % k))
    os.close(fd)
    names, _, err = list_and_stat(os.path.join(M.mnt, "gone"))
    h.eq("a listing with names removed on the source: no error", h.ename(err), h.ename(0))
    h.check("names removed on the source after the open of the listing are not listed",
            names == sorted(os.listdir(d)), (len(names), names[:5]))


h.run_tests([test_dead_mount_in_listing, test_vanished_names_skipped])
