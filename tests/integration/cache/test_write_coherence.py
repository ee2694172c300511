#!/usr/bin/env python3
"""Writes go to the source and reads after a write see it: through the mount, overwrite
the middle of a cached file, append, truncate shorter, truncate longer, pwrite into a
hole past EOF, write through a shared mmap, open with O_TRUNC; after each step the bytes
read through the writing fd, through a new open, through an fd opened before the write,
and from SOURCE are equal, also after dropping the page caches, and also with ttl=never.
With ttl=0, a write from SOURCE's side followed by one through the mount: both seen."""

import mmap
import os

import cachelib as cl
from cachelib import KiB, MiB, h


def compare(st, label, rel, fds=()):
    src = h.read_file(st.s(rel))
    want = cl.sha(src)
    ok = True
    for i, fd in enumerate(fds):
        got = cl.read_fd(fd)
        ok = h.check("%s: fd %d sees the source's bytes" % (label, i), cl.sha(got) == want,
                     "len %d vs source %d" % (len(got), len(src))) and ok
    ok = h.eq("%s: size through the mount" % label, os.stat(st.p(rel)).st_size, len(src)) and ok
    ok = cl.check_content("%s: new open" % label, st.p(rel), st.s(rel), want) and ok
    cl.drop_caches()
    ok = cl.check_content("%s: new open after dropping caches" % label, st.p(rel), st.s(rel),
                          want) and ok
    for i, fd in enumerate(fds):
        got = cl.read_fd(fd)
        ok = h.check("%s: fd %d after dropping caches" % (label, i), cl.sha(got) == want,
                     "len %d vs source %d" % (len(got), len(src))) and ok
    return ok


def scenario(st, tag):
    rel = "w-" + tag
    p = st.p(rel)
    # create and write through the mount
    data = os.urandom(3 * MiB + 333)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    compare(st, "%s create+write" % tag, rel, [fd])
    # cache it fully (a fresh open validates and fills)
    cl.check_content("%s: cache fill" % tag, p, st.s(rel))
    reader = os.open(p, os.O_RDONLY)  # an fd opened before the following writes
    cl.read_fd(reader)

    steps = [
        ("overwrite middle", lambda: os.pwrite(fd, os.urandom(300 * KiB), 1 * MiB + 100)),
        ("overwrite across a chunk boundary", lambda: os.pwrite(fd, b"X" * 1000, 256 * KiB - 500)),
        ("append", lambda: (os.lseek(fd, 0, os.SEEK_END), os.write(fd, os.urandom(700 * KiB)))),
        ("truncate shorter (ftruncate)", lambda: os.ftruncate(fd, 2 * MiB + 12345)),
        ("truncate shorter (path)", lambda: os.truncate(p, 1 * MiB + 1)),
        ("truncate longer", lambda: os.ftruncate(fd, 5 * MiB + 7)),
        ("pwrite into a hole past EOF", lambda: os.pwrite(fd, b"hole-data" * 1000, 9 * MiB)),
        ("pwrite into the hole inside", lambda: os.pwrite(fd, b"mid" * 100, 7 * MiB + 3)),
        ("truncate to 0", lambda: os.ftruncate(fd, 0)),
        ("write after truncate to 0", lambda: os.pwrite(fd, os.urandom(1 * MiB + 5), 0)),
    ]
    for label, fn in steps:
        # make sure the cache holds the current version before the change
        cl.check_content("%s %s: before (cache fill)" % (tag, label), p, st.s(rel))
        fn()
        compare(st, "%s %s" % (tag, label), rel, [fd, reader])

    # shared writable mmap through the mount
    os.ftruncate(fd, 2 * MiB)
    cl.check_content("%s mmap: before" % tag, p, st.s(rel))
    mm = mmap.mmap(fd, 2 * MiB, prot=mmap.PROT_READ | mmap.PROT_WRITE, flags=mmap.MAP_SHARED)
    mm[100:200] = b"m" * 100
    mm[MiB:MiB + 5] = b"MMAP!"
    mm.flush()
    mm.close()
    os.fsync(fd)
    compare(st, "%s shared mmap write" % tag, rel, [fd, reader])
    os.close(fd)
    os.close(reader)

    # O_TRUNC open through the mount of a cached file, then a new content
    cl.check_content("%s O_TRUNC: before" % tag, p, st.s(rel))
    with open(p, "wb") as f:
        f.write(b"short new content")
    compare(st, "%s O_TRUNC rewrite" % tag, rel)

    if tag == "ttlnever":
        return  # changes behind efscache's back are allowed to go unseen with ttl=never
    # a file written from SOURCE's side and then through the mount
    cl.make_file(st.s("both-" + tag), 2 * MiB, seed=3)
    cl.check_content("%s both: fill" % tag, st.p("both-" + tag), st.s("both-" + tag))
    with open(st.s("both-" + tag), "r+b") as f:
        f.seek(10)
        f.write(b"from the source side")
    fd = os.open(st.p("both-" + tag), os.O_RDWR)
    os.pwrite(fd, b"from the mount", 300 * KiB)
    compare(st, "%s both sides wrote" % tag, "both-" + tag, [fd])
    os.close(fd)


def test_write_coherence():
    st = cl.Stack()
    scenario(st, "ttl0")
    st.check_umount("clean unmount")


def test_write_coherence_ttl_never():
    st = cl.Stack(cache_opts=("ttl=never",))
    scenario(st, "ttlnever")
    st.check_umount("clean unmount (ttl=never)")


if __name__ == "__main__":
    cl.main([test_write_coherence, test_write_coherence_ttl_never])
