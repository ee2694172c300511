#!/usr/bin/env python3
"""Bounded space: with cache_size=16M, reading 3x that much data keeps the real disk usage
of cache_dir (sum of st_blocks * 512 of its files, sampled continuously by a thread) at or
below 16 MiB at every sample, counts evictions, evicts the least recently used data first
and returns correct bytes throughout.  With cache_min_free on a small tmpfs, the free space
never drops below the limit while the cache fills."""

import os
import threading

import cachelib as cl
from cachelib import KiB, MiB, h

LIMIT = 16 * MiB


class Sampler(threading.Thread):
    """Samples fn() until stopped; keeps the worst value and how many samples were bad."""

    def __init__(self, fn, bad):
        super().__init__(daemon=True)
        self.fn = fn
        self.bad = bad
        self.stop_ev = threading.Event()
        self.samples = 0
        self.bad_samples = 0
        self.worst = None
        self.first_bad = None
        self.errors = []

    def run(self):
        while not self.stop_ev.is_set():
            try:
                v = self.fn()
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
                v = None
            if v is not None:
                self.samples += 1
                if self.worst is None or self.bad(v, self.worst):
                    self.worst = v
                if self.bad(v, None):
                    self.bad_samples += 1
                    if self.first_bad is None:
                        self.first_bad = v
            self.stop_ev.wait(0.002)

    def stop(self):
        self.stop_ev.set()
        self.join(30)


def mount_tmpfs(d, size):
    os.makedirs(d, exist_ok=True)
    r = cl.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", d])
    return r.returncode == 0, r.stderr.strip()


def umount_tmpfs(d, label):
    r = cl.run(["umount", d])
    if r.returncode != 0:
        cl.run(["umount", "-l", d])
        h.check("%s: tmpfs unmounted" % label, False, r.stderr)


def fs_used(d):
    v = os.statvfs(d)
    return (v.f_blocks - v.f_bfree) * v.f_frsize


def fill_beyond_limit(st, label, usage_fn, want=None):
    """Read 6 files of ~8 MiB twice (3x the limit each round) plus partial reads, while
    usage_fn() and cache_usage_bytes are sampled; check both stay <= LIMIT."""

    def over(v, worst):
        return v > (worst if worst is not None else LIMIT)

    disk = Sampler(usage_fn, over)
    acct = Sampler(lambda: st.stats()["cache_usage_bytes"], over)
    want = {} if want is None else want
    names = ["f%d" % i for i in range(6)]
    disk.start()
    acct.start()
    try:
        for i, n in enumerate(names):
            want[n] = cl.make_file(st.s(n), 8 * MiB + i * 4097, seed=i + 1)
        for rnd in range(2):
            cl.drop_caches()
            for n in names:
                cl.check_content("%s: round %d: %s bytes" % (label, rnd, n), st.p(n), st.s(n),
                                 want[n])
        # partial reads across all files too
        for i in range(60):
            n = names[(i * 7) % 6]
            off = (i * 1234567) % (8 * MiB)
            got = cl.read_range(st.p(n), off, 300 * KiB)
            if got != cl.read_range(st.s(n), off, 300 * KiB):
                h.check("%s: partial read %s at %d" % (label, n, off), False, "bytes differ")
                break
    finally:
        disk.stop()
        acct.stop()
    h.check("%s: samplers saw no errors" % label, not disk.errors and not acct.errors,
            (disk.errors + acct.errors)[:3])
    h.check("%s: disk usage sampled often" % label, disk.samples > 20,
            "%d samples" % disk.samples)
    h.check("%s: disk usage <= cache_size at every sample" % label, disk.bad_samples == 0,
            "%d of %d samples over %d; worst %d (+%d bytes)" % (
                disk.bad_samples, disk.samples, LIMIT, disk.worst or 0,
                (disk.worst or 0) - LIMIT))
    h.check("%s: cache_usage_bytes <= cache_size_bytes at every sample" % label,
            acct.bad_samples == 0, "%d of %d samples over; worst %d" % (
                acct.bad_samples, acct.samples, acct.worst or 0))
    s = st.stats()
    h.check("%s: evictions counted" % label, s["evictions"] > 0 and s["evicted_bytes"] > 0,
            str(s))
    h.check("%s: the cache is in use (not just bypassed)" % label,
            s["cache_usage_bytes"] > LIMIT // 2, "cache_usage_bytes %d" % s["cache_usage_bytes"])
    h.note("%s: disk usage: worst sample %d of %d, %d samples" % (label, disk.worst or 0, LIMIT,
                                                                  disk.samples))
    return names, want


def test_cache_size_tmpfs():
    """cache_dir alone on a tmpfs: the file system's used blocks are an atomic measure."""
    base = h.tmpdir("efscache-cache-")
    tdir = os.path.join(base, "tmpfs")
    ok, err = mount_tmpfs(tdir, "64m")
    if not ok:
        h.skip("cache_size on a tmpfs", "cannot mount a tmpfs: %s" % err)
        return
    try:
        st = cl.Stack(cache_opts=("cache_size=16M", "cache_min_free=0"), base=base,
                      cache_dir=os.path.join(tdir, "cache"))
        fill_beyond_limit(st, "tmpfs", lambda: fs_used(tdir))
        st.check_umount("tmpfs: clean unmount")
        h.check("tmpfs: emu unmounted", not st.emu_m.umount())
    finally:
        umount_tmpfs(tdir, "tmpfs")


def test_cache_size():
    """cache_dir on the usual disk file system (/tmp): usage is the sum of st_blocks * 512
    of its files, from consistent snapshots."""
    st = cl.Stack(cache_opts=("cache_size=16M", "cache_min_free=0"))
    h.eq("cache_size_bytes reported", st.stats().get("cache_size_bytes"), LIMIT)
    names, want = fill_beyond_limit(st, "disk", lambda: cl.stable_file_usage(st.cache_dir))
    h.check("final disk usage <= cache_size", cl.file_usage(st.cache_dir) <= LIMIT,
            "%d" % cl.file_usage(st.cache_dir))

    # LRU: A, B, C cached; A read again; D read -> B (least recently used) goes first
    for n in ("A", "B", "C", "D"):
        want[n] = cl.make_file(st.s(n), 4 * MiB, seed=ord(n))
    for n in names:
        st.evict(n)
    cl.drop_caches()
    for n in ("A", "B", "C"):
        cl.check_content("LRU: read %s" % n, st.p(n), st.s(n), want[n])
    cl.drop_caches()
    cl.check_content("LRU: read A again", st.p("A"), st.s("A"), want["A"])
    full = [st.status(n)["cached_bytes"] for n in ("A", "B", "C")]
    h.eq("LRU: A, B, C fully cached before D", full, [4 * MiB] * 3)
    cl.drop_caches()
    cl.check_content("LRU: read D", st.p("D"), st.s("D"), want["D"])
    cached = {n: st.status(n)["cached_bytes"] for n in ("A", "B", "C", "D")}
    h.check("LRU: B (least recently used) lost data", cached["B"] < 4 * MiB, str(cached))
    h.check("LRU: A (used again) was kept", cached["A"] == 4 * MiB, str(cached))
    h.check("LRU: D (just read) is cached", cached["D"] == 4 * MiB, str(cached))
    h.check("LRU: usage <= limit", cl.file_usage(st.cache_dir) <= LIMIT,
            "%d" % cl.file_usage(st.cache_dir))
    st.check_umount("clean unmount")


def test_min_free():
    base = h.tmpdir("efscache-cache-")
    tdir = os.path.join(base, "tmpfs")
    ok, err = mount_tmpfs(tdir, "24m")
    if not ok:
        h.skip("cache_min_free on a tmpfs", "cannot mount a tmpfs: %s" % err)
        return
    try:
        cache_dir = os.path.join(tdir, "cache")
        st = cl.Stack(cache_opts=("cache_size=1G", "cache_min_free=8M"), base=base,
                      cache_dir=cache_dir)
        min_free = 8 * MiB

        def free():
            v = os.statvfs(tdir)
            return v.f_bavail * v.f_frsize

        low = Sampler(free, lambda v, worst: v < (worst if worst is not None else min_free))
        low.start()
        try:
            want = {}
            for i in range(4):
                n = "g%d" % i
                want[n] = cl.make_file(st.s(n), 8 * MiB, seed=50 + i)
                cl.check_content("min_free: %s bytes" % n, st.p(n), st.s(n), want[n])
            # then four readers at once (concurrent chunk fetches), twice
            for rnd in range(2):
                cl.drop_caches()
                results = {}

                def reader(n):
                    try:
                        results[n] = cl.hash_file(st.p(n))
                    except OSError as e:
                        results[n] = repr(e)
                ts = [threading.Thread(target=reader, args=(n,)) for n in sorted(want)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                h.eq("min_free: 4 concurrent readers, round %d: bytes" % rnd, results, want)
        finally:
            low.stop()
        h.check("min_free: free space on cache_dir's fs >= cache_min_free at every sample",
                low.bad_samples == 0, "%d of %d samples under %d; lowest %d" % (
                    low.bad_samples, low.samples, min_free, low.worst or 0))
        s = st.stats()
        h.check("min_free: evictions counted", s["evictions"] > 0, str(s))
        h.check("min_free: the cache is used", s["cache_usage_bytes"] > 4 * MiB, str(s))
        st.check_umount("min_free: clean unmount")
        h.check("min_free: emu unmounted", not st.emu_m.umount())
    finally:
        umount_tmpfs(tdir, "min_free")


if __name__ == "__main__":
    cl.main([test_cache_size, test_cache_size_tmpfs, test_min_free])
