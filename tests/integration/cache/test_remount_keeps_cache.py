#!/usr/bin/env python3
"""Survives restarts: after unmount and remount with the same cache_dir, files cached by
the previous daemon are served from cache_dir (0 bytes fetched from the source, every
chunk verified once against its checksum), with the right bytes.  A remount with another
chunk_size must not misuse the old records (right bytes, refetched)."""

import os

import cachelib as cl
from cachelib import MiB, h


def test_remount_keeps_cache():
    st = cl.Stack()
    files = {"a": 3 * MiB + 7, "dir/b": 1 * MiB, "c": 100}
    os.makedirs(st.s("dir"))
    want = {}
    for i, (n, size) in enumerate(sorted(files.items())):
        want[n] = cl.make_file(st.s(n), size, seed=10 + i)

    for n in files:
        cl.check_content("first read %s" % n, st.p(n), st.s(n), want[n])
    stored = st.stats()["chunks_stored"]
    h.eq("chunks stored by the first daemon", stored, 13 + 4 + 1)

    for rnd in range(2):
        st.remount()
        cl.drop_caches()
        stat = st.status("a")
        h.eq("remount %d: status of a before any open: cached_bytes" % rnd,
             stat.get("cached_bytes"), files["a"])
        st.emu_reset()
        for n in files:
            cl.check_content("remount %d: read %s" % (rnd, n), st.p(n), st.s(n), want[n])
        e = st.emu_stats()
        s = st.stats()
        h.eq("remount %d: emu read_bytes" % rnd, e["read_bytes"], 0)
        h.eq("remount %d: efscache bytes_from_source" % rnd, s["bytes_from_source"], 0)
        h.eq("remount %d: no chunk stored again" % rnd, s["chunks_stored"], 0)
        h.check("remount %d: chunks verified before first use (verify=once)" % rnd,
                s["chunks_verified"] >= 18, "chunks_verified %d < 18" % s["chunks_verified"])
        h.eq("remount %d: no checksum mismatch" % rnd, s["checksum_mismatches"], 0)
        h.check("remount %d: bytes_from_cache" % rnd,
                s["bytes_from_cache"] >= sum(files.values()), str(s))
        h.check("remount %d: cache_usage_bytes accounts the old records" % rnd,
                s["cache_usage_bytes"] >= sum(files.values()), str(s))

    # Another chunk size: the old records must not be used as if they matched.
    st.chunk_size = "64K"
    st.remount()
    cl.drop_caches()
    for n in files:
        cl.check_content("chunk_size changed: read %s" % n, st.p(n), st.s(n), want[n])
    stat = st.status("a")
    h.eq("chunk_size changed: status chunk_size", stat.get("chunk_size"), 64 * 1024)
    st.chunk_size = "256K"
    st.remount()
    cl.drop_caches()
    for n in files:
        cl.check_content("chunk_size back: read %s" % n, st.p(n), st.s(n), want[n])

    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_remount_keeps_cache])
