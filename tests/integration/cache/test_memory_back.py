#!/usr/bin/env python3
"""Buffer memory is bounded and given back (issue 18, item 4): many concurrent cold readers
of different files (cache_size smaller than the files together, so eviction runs too) read
the right bytes, the daemon's peak RSS stays within its buffer budget plus its resting
size, and once the load is over its RSS falls back to its resting size.  Witness: VmHWM
and VmRSS of the daemon (/proc/PID/status).  Nothing is timed: the daemon gives memory back
at its periodic sweep, so the check waits (bounded) for RSS to come down."""

import os
import threading

import cachelib as cl
from cachelib import MiB, h

READERS = 16
FILE = 16 * MiB
# The daemon's buffer budget with chunk_size=1M and prefetch=8 (cache.c: at least
# 48 MiB), and what a mounted daemon holds beside it (code, libfuse, tables, stacks).
BUDGET = 48 * MiB
BASE = 24 * MiB
# At rest: the daemon without its buffers (a few MiB).  The bound, 64 MiB after
# 32 readers of 64 MiB files, is what contrib/bench/cold.sh measures.
REST = 24 * MiB


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def test_many_readers():
    # glibc's MALLOC_PERTURB_ (meson sets it) fills every block malloc hands out, so the
    # daemon's untouched malloc'd memory (libfuse's 1 MiB request buffer per thread)
    # would count in its RSS: not what this test measures.
    os.environ.pop("MALLOC_PERTURB_", None)
    st = cl.Stack(cache_opts=["cache_size=%d" % (READERS * FILE // 2), "prefetch=8"],
                  chunk_size="1M")
    want = {}
    for i in range(READERS):
        want[i] = cl.make_file(st.s("f%d" % i), FILE, seed=40 + i)
    cl.drop_caches()
    pid = st.daemon_pid()
    h.check("the daemon's pid is known", pid is not None)
    got = {}

    def reader(i):
        got[i] = cl.hash_file(st.p("f%d" % i))

    ths = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    for i in range(READERS):
        h.eq("reader %d read the right bytes" % i, got.get(i), want[i])
    peak = status_kib(pid, "VmHWM")
    san = h.sanitizer_of(pid)
    if san:
        # ASan's quarantine and shadow (also of the pool's free buffers, poisoned while
        # free) and TSan's shadow are most of such a daemon's RSS: nothing to bound.
        h.note("%s build: RSS is the sanitizer's as much as ours, not checked (peak %d MiB)"
               % (san, peak // MiB))
    else:
        h.check("peak RSS within the buffer budget and the daemon's base",
                peak <= BUDGET + BASE, "VmHWM %d MiB" % (peak // MiB))
        ok = cl.wait_for(lambda: status_kib(pid, "VmRSS") <= REST, timeout=30)
        rss = status_kib(pid, "VmRSS")
        h.check("RSS at rest after the load <= %d MiB" % (REST // MiB), ok,
                "VmRSS %d MiB" % (rss // MiB))
        print("# peak %d MiB, rest %d MiB" % (peak // MiB, rss // MiB))
    h.check("clean unmount", not st.umount())


if __name__ == "__main__":
    cl.main([test_many_readers])
