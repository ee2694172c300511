#!/usr/bin/env python3
"""One daemon per cache_dir, even after `rm -rf`: cache_dir is removed while mounted and,
before this daemon's sweep recreates it, someone else makes it and takes its lock (as a
second efscache started then would).  The daemon must not share it: it logs an error,
stops caching (reads still return the right bytes, from the source, and nothing of its own
appears in the other's cache_dir), and starts caching again once the lock is free.
Witnesses: the daemon's stderr, the files in cache_dir, efscache's chunks_stored and
efs-emu's read counters."""

import fcntl
import os
import shutil
import time

import cachelib as cl
from cachelib import MiB, h


def take_over(cache_dir):
    """rm -rf cache_dir, then make it again and flock its lock before the daemon's sweep
    (once a second) can.  Returns the lock fd, or None if the daemon won the race."""
    for _ in range(20):
        shutil.rmtree(cache_dir, ignore_errors=True)
        try:
            os.mkdir(cache_dir, 0o700)
        except FileExistsError:
            continue  # the daemon recreated it first: try again
        fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.write(fd, b"%d\n" % os.getpid())
        return fd
    return None


def our_files(cache_dir):
    return sorted(os.path.relpath(os.path.join(dp, f), cache_dir)
                  for dp, _, fs in os.walk(cache_dir) for f in fs if f != "lock")


def test_cache_dir_taken():
    st = cl.Stack()
    want = {n: cl.make_file(st.s(n), 3 * MiB + i, seed=i + 1) for i, n in enumerate("abc")}
    cl.check_content("a cached", st.p("a"), st.s("a"), want["a"])

    fd = take_over(st.cache_dir)
    h.check("setup: cache_dir removed and its lock taken by someone else", fd is not None)
    if fd is None:
        st.check_umount("clean unmount")
        return
    ok = cl.wait_for(lambda: "another efscache holds its lock" in st.m.stderr(), timeout=10)
    h.check("the daemon says it lost cache_dir and stops caching", ok, st.m.stderr()[-500:])

    s0 = st.stats()
    for n in "ab":
        cl.drop_caches()
        e0 = st.emu_file_stats(n).get("read_bytes", 0)
        cl.check_content("cache_dir taken: %s reads right" % n, st.p(n), st.s(n), want[n])
        h.check("cache_dir taken: %s came from the source" % n,
                st.emu_file_stats(n)["read_bytes"] - e0 >= 3 * MiB)
    time.sleep(1.5)  # a sweep or two
    h.eq("cache_dir taken: nothing of ours written into it", our_files(st.cache_dir), [])
    h.eq("cache_dir taken: chunks_stored unchanged", cl.delta(st.stats(), s0, "chunks_stored"),
         0)
    h.check("cache_dir taken: stats still answer", "cache_usage_bytes" in st.stats())

    # The other one goes away: the lock is ours again, and caching resumes.
    os.close(fd)
    ok = cl.wait_for(lambda: "caching again" in st.m.stderr(), timeout=10)
    h.check("lock free again: the daemon takes it and says so", ok, st.m.stderr()[-500:])
    cl.drop_caches()
    cl.check_content("lock back: c reads right", st.p("c"), st.s("c"), want["c"])
    h.check("lock back: chunks stored again", cl.delta(st.stats(), s0, "chunks_stored") > 0)
    h.check("lock back: a record in cache_dir", len(cl.records(st.cache_dir)) >= 1,
            our_files(st.cache_dir))
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_cache_dir_taken])
