#!/usr/bin/env python3
"""Cache trouble never fails a read: cache_dir on a 4 MiB tmpfs with cache_size far larger
and cache_min_free=0.  A 32 MiB file reads correctly; with the tmpfs 100% full (nothing
of the cache left to evict) reads are still correct and the fallback is counted; with a
second writer filling the tmpfs during a read, still correct; once space is freed,
caching resumes (chunks_stored grows again); and a daemon started on a full tmpfs
mounts and serves correct bytes."""

import os
import subprocess

import cachelib as cl
from cachelib import MiB, h

TMPFS_SIZE = "4m"
CHUNK = 256 * 1024  # cachelib.Stack's chunk_size (256K)


def fill_up(path):
    """Write zeros to path until the file system is full; returns bytes written."""
    n = 0
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                k = os.write(fd, block)
            except OSError as e:
                if e.errno in (28, 122):  # ENOSPC, EDQUOT
                    break
                raise
            if k <= 0:
                break
            n += k
        # the last partial pages
        for size in (4096, 512, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) <= 0:
                        break
                    n += size
                except OSError:
                    break
    finally:
        os.close(fd)
    return n


def free_bytes(d):
    v = os.statvfs(d)
    return v.f_bavail * v.f_frsize


def test_tiny_tmpfs():
    base = h.tmpdir("efscache-cache-")
    tdir = os.path.join(base, "tmpfs")
    os.makedirs(tdir)
    r = cl.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % TMPFS_SIZE, "tmpfs", tdir])
    if r.returncode != 0:
        h.skip("tiny tmpfs", "cannot mount a tmpfs: %s" % r.stderr.strip())
        return
    st = None
    filler = os.path.join(tdir, "filler")
    try:
        st = cl.Stack(cache_opts=("cache_size=1G", "cache_min_free=0"), base=base,
                      cache_dir=os.path.join(tdir, "cache"))
        want = {}
        for i, n in enumerate(("a", "b", "c", "d")):
            want[n] = cl.make_file(st.s(n), 32 * MiB + i * 1001, seed=i + 1)

        # 1. a file 8x larger than the file system
        cl.check_content("32 MiB file through a 4 MiB cache fs", st.p("a"), st.s("a"), want["a"])
        cl.drop_caches()
        cl.check_content("again", st.p("a"), st.s("a"), want["a"])
        s1 = st.stats()
        h.check("some chunks were cached", s1["chunks_stored"] > 0, str(s1))
        h.note("after a: chunks_stored %d evictions %d fallbacks %d cache_enospc %d" % (
            s1["chunks_stored"], s1["evictions"], s1["fallbacks"], s1["cache_enospc"]))

        # 2. the file system 100% full, nothing of the cache in it
        st.evict("a")
        written = fill_up(filler)
        h.check("setup: tmpfs is full", free_bytes(tdir) == 0,
                "free %d after writing %d" % (free_bytes(tdir), written))
        cl.drop_caches()
        s0 = st.stats()
        cl.check_content("fs 100% full: new file b", st.p("b"), st.s("b"), want["b"])
        cl.check_content("fs 100% full: a (record exists, chunks evicted)", st.p("a"),
                         st.s("a"), want["a"])
        cl.drop_caches()
        cl.check_content("fs 100% full: b again", st.p("b"), st.s("b"), want["b"])
        s1 = st.stats()
        trouble = (cl.delta(s1, s0, "fallbacks") + cl.delta(s1, s0, "cache_enospc"))
        h.check("fs 100% full: fallbacks or cache_enospc counted", trouble > 0, str(s1))
        h.check("fs 100% full: bytes served from the source (bypassed or fetched)",
                cl.delta(s1, s0, "bytes_bypassed") + cl.delta(s1, s0, "bytes_from_source")
                >= 3 * 32 * MiB, str(s1))

        # 3. space freed: caching resumes
        os.unlink(filler)
        cl.drop_caches()
        s0 = st.stats()
        cl.check_content("space freed: b", st.p("b"), st.s("b"), want["b"])
        cl.check_content("space freed: c (new)", st.p("c"), st.s("c"), want["c"])
        s1 = st.stats()
        h.check("space freed: chunks_stored grows again", cl.delta(s1, s0, "chunks_stored") > 0,
                "chunks_stored %d -> %d" % (s0["chunks_stored"], s1["chunks_stored"]))
        h.check("space freed: cache_usage_bytes > 0", s1["cache_usage_bytes"] > 0, str(s1))
        # a file that fits: the second read comes from the cache, but for the chunks whose
        # store was refused and counted (on 4 MiB the fs can fill between a reservation and
        # its write: the record and slot writes of other files take pages unreserved)
        want_e = cl.make_file(st.s("e"), 2 * MiB, seed=9)
        s0 = st.stats()
        cl.check_content("space freed: small file e", st.p("e"), st.s("e"), want_e)
        s1 = st.stats()  # settled: e's chunks are written behind the replies
        cached = st.status("e").get("cached_bytes", 0)
        refused = cl.delta(s1, s0, "fallbacks")
        h.note("e: cached %d of %d bytes, %d stores refused" % (cached, 2 * MiB, refused))
        h.check("space freed: e cached but for the refused stores",
                cached >= 2 * MiB - refused * CHUNK and cached >= MiB, str(s1))
        cl.drop_caches()
        e0 = st.emu_file_stats("e")
        cl.check_content("space freed: e again", st.p("e"), st.s("e"), want_e)
        h.eq("space freed: e again fetched from the emu only what was not cached",
             st.emu_file_stats("e")["read_bytes"] - e0.get("read_bytes", 0), 2 * MiB - cached)

        # 4. another writer fills the fs while we read
        st.evict("c")
        cl.drop_caches()
        dd = subprocess.Popen(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cl.check_content("concurrent filler: d", st.p("d"), st.s("d"), want["d"])
        finally:
            dd.wait(timeout=60)
        fill_up(filler)
        cl.drop_caches()
        cl.check_content("after the filler: c", st.p("c"), st.s("c"), want["c"])
        cl.check_content("after the filler: d", st.p("d"), st.s("d"), want["d"])

        # 5. a daemon started with the fs full (and kept full)
        st.check_umount("unmount")
        fill_up(filler)
        st.mount()
        cl.drop_caches()
        for n in ("a", "b", "c", "d"):
            cl.check_content("started on a full fs: %s" % n, st.p(n), st.s(n), want[n])
        os.unlink(filler)
        cl.drop_caches()
        s0 = st.stats()
        cl.check_content("started on a full fs, then freed: d", st.p("d"), st.s("d"), want["d"])
        h.check("started on a full fs, then freed: chunks stored",
                cl.delta(st.stats(), s0, "chunks_stored") > 0, str(st.stats()))
        st.check_umount("clean unmount")
        h.check("emu unmounted", not st.emu_m.umount())
    finally:
        if st is not None and st.m is not None:
            st.umount()
        r = cl.run(["umount", tdir])
        if r.returncode != 0:
            cl.run(["umount", "-l", tdir])
            h.check("tmpfs unmounted", False, r.stderr)


if __name__ == "__main__":
    cl.main([test_tiny_tmpfs])
