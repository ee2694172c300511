#!/usr/bin/env python3
"""Hit after miss: the first read of a file fetches it from the source once; a second
read (new open, page caches dropped) is served from cache_dir and fetches 0 bytes from
the source, as efs-emu's counters witness.  Also: a partial read then a full read return
the right bytes, and evicting a file makes the next read fetch it again."""

import os

import cachelib as cl
from cachelib import MiB, h


def test_hit_after_miss():
    st = cl.Stack()
    size = 5 * MiB + 12345  # not a multiple of the chunk size
    want = cl.make_file(st.s("f"), size, seed=1)

    cl.drop_caches()
    st.emu_reset()
    s0 = st.stats()
    cl.check_content("first read: bytes equal the source", st.p("f"), st.s("f"), want)
    e1 = st.emu_stats()
    s1 = st.stats()
    h.check("first read fetched the file from the source", e1["read_bytes"] >= size,
            "emu read_bytes %d < file size %d" % (e1["read_bytes"], size))
    h.check("first read: efscache counted bytes_from_source",
            cl.delta(s1, s0, "bytes_from_source") >= size, "stats %s" % s1)
    h.check("first read: chunks stored", cl.delta(s1, s0, "chunks_stored") == 21,
            "chunks_stored grew by %d, expected 21 (5 MiB + 12345 in 256 KiB chunks)"
            % cl.delta(s1, s0, "chunks_stored"))
    # Held open while status runs: another process's drop_caches would make the daemon unload
    # the entry of an inode the kernel forgot, and status would say "unvalidated".
    with open(st.p("f"), "rb"):
        stat = st.status("f")
    h.eq("status: state", stat.get("state"), "valid")
    h.eq("status: cached_bytes", stat.get("cached_bytes"), size)
    h.eq("status: chunks_cached", stat.get("chunks_cached"), stat.get("chunks"))

    for rnd in range(2):
        cl.drop_caches()
        e_before = st.emu_stats()
        s_before = st.stats()
        cl.check_content("re-read %d: bytes equal the source" % rnd, st.p("f"), st.s("f"), want)
        e_after = st.emu_stats()
        s_after = st.stats()
        h.eq("re-read %d: 0 bytes fetched from the emu" % rnd,
             cl.delta(e_after, e_before, "read_bytes"), 0)
        h.eq("re-read %d: efscache bytes_from_source unchanged" % rnd,
             cl.delta(s_after, s_before, "bytes_from_source"), 0)
        h.check("re-read %d: bytes_from_cache grew by the file size" % rnd,
                cl.delta(s_after, s_before, "bytes_from_cache") >= size,
                "grew by %d" % cl.delta(s_after, s_before, "bytes_from_cache"))
        h.check("re-read %d: hits counted" % rnd, cl.delta(s_after, s_before, "hits") > 0,
                str(s_after))
        h.check("re-read %d: the source was still validated (ttl=0)" % rnd,
                cl.delta(s_after, s_before, "validations") >= 1, str(s_after))

    # Partial read of a new file, then the whole file.
    want_g = cl.make_file(st.s("g"), 4 * MiB, seed=2)
    cl.drop_caches()
    got = cl.read_range(st.p("g"), 1 * MiB + 100, 1000)
    h.eq("partial read: bytes", got, cl.read_range(st.s("g"), 1 * MiB + 100, 1000))
    # (how many chunks a partial read fetches is up to readahead: not asserted)
    cl.check_content("partial then full read: bytes", st.p("g"), st.s("g"), want_g)

    # Evict: the next read fetches again, and is still correct.
    st.evict("f")
    stat = st.status("f")
    h.eq("after evict: cached_bytes", stat.get("cached_bytes"), 0)
    cl.drop_caches()
    e0 = st.emu_file_stats("f")
    cl.check_content("after evict: bytes", st.p("f"), st.s("f"), want)
    e1 = st.emu_file_stats("f")
    h.check("after evict: fetched from the emu again",
            e1["read_bytes"] - e0.get("read_bytes", 0) >= size,
            "emu file read_bytes %d -> %d" % (e0.get("read_bytes", 0), e1["read_bytes"]))
    h.check("cache_usage_bytes > 0", st.stats().get("cache_usage_bytes", 0) > 0,
            str(st.stats()))

    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_hit_after_miss])
