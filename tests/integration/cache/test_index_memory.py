#!/usr/bin/env python3
"""The directory index's memory is bounded (DESIGN rule 17; issue 17: RSS on a 200,000-file
tree): snapshots stay loaded after they answered only up to -o index_mem, the others are read
back from cache_dir when asked, and still answer without the source.  The daemon's own gauges
(index_snapshots, index_memory_bytes, index_memory_budget, index_loads) are the witness: a
tree of more snapshot bytes than the budget is walked, so a snapshot kept past its use (a
reference leaked, the bound ignored, a bound raised by mistake) shows as bytes over the
budget, with no timing and no RSS threshold.  efs-emu's LOOKUP counter shows that the
snapshots read back still answer for the source after a restart (-o immutable: with
ttl=never alone an OPENDIR reopens each directory's fd, a LOOKUP at the source)."""

import os

import cachelib as cl
from cachelib import h

EMU = ("latency_ms=0", "meta_latency_ms=0", "bw_mib=0", "lookupcache=none")
DIRS = 24
FILES = 20
# Each directory's snapshot: FILES x (112 B entry + a 120-byte name) is about 4.7 KiB in
# memory, so the tree's snapshots (about 115 KiB) are seven times the budget.
BUDGET = 16 << 10


def make_tree(st):
    for d in range(DIRS):
        os.makedirs(st.s("d%02d" % d))
        for f in range(FILES):
            name = "m%02d_" % f + "x" * 116
            with open(st.s("d%02d" % d, name), "wb") as fh:
                fh.write(b"%d %d\n" % (d, f))


def walk_stat(root):
    """Every name listed and stat'ed: {relative path: size}."""
    seen = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            seen[os.path.relpath(p, root)] = os.lstat(p).st_size
    return seen


def index_gauges(st, what):
    s = st.stats()
    g = {k: s.get(k, -1) for k in ("index_snapshots", "index_memory_bytes",
                                   "index_memory_budget", "index_loads", "index_builds")}
    h.note("%s: %s" % (what, g))
    return g


def test_default_budget():
    st = cl.Stack(emu_opts=EMU)
    h.eq("index_memory_budget without the option: 8 MiB", st.stats().get("index_memory_budget"),
         8 << 20)
    st.check_umount()


def test_snapshots_bounded_and_read_back():
    st = cl.Stack(emu_opts=EMU, cache_opts=("immutable", "index_mem=%d" % BUDGET))
    make_tree(st)
    src = walk_stat(st.src)
    h.eq("first daemon: find + stat", walk_stat(st.mnt), src)
    g = index_gauges(st, "first daemon")
    h.eq("the budget is the option's", g["index_memory_budget"], BUDGET)
    h.check("more snapshots made than the budget holds",
            g["index_builds"] > DIRS and g["index_snapshots"] < g["index_builds"], g)
    h.check("at rest, snapshots in memory within the budget",
            0 <= g["index_memory_bytes"] <= BUDGET, g)

    st.remount()  # a daemon restart, cache_dir kept: every snapshot from cache_dir
    cl.drop_caches()
    e0 = st.emu_stats().get("lookups", 0)
    h.eq("restarted: find + stat", walk_stat(st.mnt), src)
    looked = st.emu_stats().get("lookups", 0) - e0
    g = index_gauges(st, "restarted")
    h.eq("restarted: no LOOKUP reaches the source", looked, 0)
    h.check("restarted: snapshots read back from cache_dir", g["index_loads"] > DIRS, g)
    h.check("restarted: at rest, snapshots in memory within the budget",
            0 <= g["index_memory_bytes"] <= BUDGET, g)
    st.check_umount()


h.run_tests([test_default_budget, test_snapshots_bounded_and_read_back])
