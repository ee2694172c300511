#!/usr/bin/env python3
"""Records read back at a listing (docs/design.md, "Reading cached files back"; issue 17):
after a restart on a kept cache_dir with the page cache dropped, a listing of a package
answered by the directory index makes the daemon read the cache's records of the package's
small files, and of its __pycache__'s, back into the page cache ahead of their reads, so
that an import does not wait for the disk once per file.  efscache's `record_readaheads`
counter is the witness: one per small regular file with a record, none for a file over
1 MiB, a subdirectory's files or with -o siblings=0; efs-emu's counters show that none of
it reaches the source."""

import os

import cachelib as cl
from cachelib import KiB, MiB, h

EMU = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "acregmin=1", "acdirmin=1",
       "lookupcache=none")


def make_pkg(st):
    """pkg/: __init__.py, five modules, big.bin (2 MiB), __pycache__/ with three .pyc,
    sub/ with one module.  Returns {relative path: sha256}."""
    want = {}
    for d in ("pkg", "pkg/__pycache__", "pkg/sub"):
        os.makedirs(st.s(d))
    names = ["pkg/__init__.py"] + ["pkg/m%d.py" % i for i in range(5)] + \
        ["pkg/__pycache__/m%d.cpython-311.pyc" % i for i in range(3)] + ["pkg/sub/x.py"]
    for i, rel in enumerate(names):
        want[rel] = cl.make_file(st.s(rel), 2 * KiB + 97 * i, seed=i)
    want["pkg/big.bin"] = cl.make_file(st.s("pkg/big.bin"), 2 * MiB, seed=99)
    return want


def read_all(st, want):
    return {rel: cl.hash_file(st.p(rel)) for rel in want}


def meta(e):
    return {k: e.get(k, 0) for k in ("lookups", "getattrs", "opens", "readdirs", "read_ops")}


def restart_and_list(st, extra=None):
    """A new daemon on the cache_dir, caches dropped, the startup index complete; then the
    listing of pkg an import begins with.  Returns efs-emu's counters before the listing."""
    st.remount(extra)
    cl.drop_caches()
    h.check("the startup index completed",
            cl.wait_for(lambda: st.stats(settled=False).get("cache_index_ready") == 1, 30))
    e0 = meta(st.emu_stats())
    names = ["__init__.py", "__pycache__", "big.bin", "sub"] + ["m%d.py" % i for i in range(5)]
    h.eq("the listing", sorted(os.listdir(st.p("pkg"))), sorted(names))
    return e0


def test_read_back():
    st = cl.Stack(emu_opts=EMU, cache_opts=("immutable",))
    want = make_pkg(st)
    for d in ("pkg", "pkg/__pycache__", "pkg/sub"):
        os.listdir(st.p(d))  # their snapshots, as an import's walk makes them
    h.eq("first daemon: bytes equal the source", read_all(st, want), want)

    e0 = restart_and_list(st)
    # The jobs are queued after the listing's reply: wait for them, then for the pool.
    cl.wait_for(lambda: st.stats(settled=False).get("record_readaheads", 0) >= 9, 30)
    s = st.stats()
    h.eq("read back: pkg's 6 small files and __pycache__'s 3, not big.bin nor sub/x.py",
         s.get("record_readaheads"), 9)
    e1 = meta(st.emu_stats())
    h.eq("the listing and the read-back asked nothing of the source",
         {k: e1[k] - e0[k] for k in e1}, {k: 0 for k in e1})
    h.eq("restarted: bytes equal the source", read_all(st, want), want)
    h.eq("the reads read nothing back again", st.stats().get("record_readaheads"), 9)

    restart_and_list(st, ["siblings=0"])
    h.eq("siblings=0: bytes equal the source", read_all(st, want), want)
    h.eq("-o siblings=0: nothing read back", st.stats().get("record_readaheads", 0), 0)
    st.check_umount()


if __name__ == "__main__":
    cl.main([test_read_back])
