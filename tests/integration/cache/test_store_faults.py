#!/usr/bin/env python3
"""Faults of cache_dir itself, injected into the daemon's calls by the LD_PRELOAD shim
(tests/faultinj/README.md), never cost a reader its bytes and never stop the daemon
(DESIGN rule 16; issue 15, items 2 and C1):

    EMFILE on every open in cache_dir, and on a third of them; ENOSPC on its writes,
    fallocate and truncate; EIO on the reads and writes of data files (with verify=always,
    so that every read reads its chunk); ENOENT on opens of meta files; EMFILE and EIO
    armed across a restart of the daemon;

while four files are read, half of them cached before the fault.  Every read gives the
source's bytes (buffered after drop_caches, and O_DIRECT); the shim's log says each rule
fired (the witness that the faults reached the daemon); the daemon keeps serving; once
the rules are off, caching resumes: the files read again are served from the cache
(0 bytes from the emu).

And C1, step by step: one EMFILE when a cached file's record is reopened at open makes
the core forget the record and start a new one; the next open loads the record from disk
over that live entry (a second chunk array, the first one's chunks left on the LRU); when
eviction reaches those, it punches holes under chunks the new array calls verified, and
the file reads as zeros.  Fails on the core of c6fae63 (the other phases pass there)."""

import os

import cachelib as cl
from cachelib import KiB, MiB, h

FILES = ("a", "b", "c", "d")


def check_all(what, st, want):
    """Every file reads as the source, both ways; returns whether all did."""
    ok = True
    for how, fn in (("buffered", lambda n: cl.read_whole(st.p(n))),
                    ("O_DIRECT", lambda n: cl.read_direct_all(st.p(n), len(want[n])))):
        cl.drop_caches()
        bad = []
        for n in FILES:
            try:
                got = fn(n)
            except OSError as e:
                bad.append("%s: %s" % (n, e))
                continue
            if got != want[n]:
                bad.append("%s: %d bytes of %d%s" % (
                    n, len(got), len(want[n]),
                    ", a page of zeros" if cl.has_zero_page(got) else
                    ", other bytes" if len(got) == len(want[n]) else ""))
        ok = h.check("%s: %s reads give the source's bytes" % (what, how), not bad,
                     "; ".join(bad)) and ok
    return ok


def check_caching_resumes(what, st, want):
    """Faults off: read everything (it is cached), then again: nothing from the emu."""
    check_all("%s, faults off" % what, st, want)
    st.stats()
    cl.drop_caches()
    e0 = st.emu_read_bytes()
    for n in FILES:
        cl.read_whole(st.p(n))
    h.eq("%s, faults off: caching resumed (bytes read again from the emu)" % what,
         st.emu_read_bytes() - e0, 0)


PHASES = (
    ("EMFILE on every open in cache_dir", "open EMFILE", None),
    ("EMFILE on a third of the opens", "open EMFILE p=0.33 seed=7", None),
    ("ENOSPC on writes, fallocate, truncate",
     "write ENOSPC\nfallocate ENOSPC\ntruncate ENOSPC", None),
    ("EIO on data files' reads and writes (verify=always)",
     "read EIO kind=data\nwrite EIO kind=data", "verify=always"),
    ("ENOENT on opens of meta files", "open ENOENT kind=meta", None),
)


def test_store_faults():
    """The phases above, then a restart with rules armed."""
    st = cl.Stack(cache_env=cl.faultinj_env, cache_opts=("prefetch=2",))
    want = {}
    for i, n in enumerate(FILES):
        want[n] = os.urandom(3 * MiB + 64 * KiB * i + 17)
        h.write_file(st.s(n), want[n])
    check_all("no fault yet", st, want)
    h.check("the shim is loaded in the daemon", "efscache-faultinj" in st.stderr(),
            st.stderr()[-300:])
    mode = None
    for what, rules, opt in PHASES:
        if opt != mode:
            mode = opt
            st.remount([opt] if opt else None)
        for n in FILES[:2]:  # half of them must be fetched (and stored) under the fault
            st.evict(n)
        fired0 = cl.faultinj_failed(st)
        s0 = st.stats()
        cl.faultinj_set(st, rules)
        check_all(what, st, want)
        check_all("%s, again" % what, st, want)
        s1 = st.stats()
        h.check("%s: the shim failed calls of the daemon" % what,
                cl.faultinj_failed(st) > fired0, st.stderr()[-400:])
        h.note("%s: cache_io_errors +%d, cache_enospc +%d, fallbacks +%d" % (
            what, cl.delta(s1, s0, "cache_io_errors"), cl.delta(s1, s0, "cache_enospc"),
            cl.delta(s1, s0, "fallbacks")))
        cl.faultinj_set(st, "")
        check_caching_resumes(what, st, want)
    if mode:
        st.remount()

    # Armed across a restart: the startup index and the first reads meet them.
    what = "EMFILE and EIO on records across a restart"
    st.check_umount("%s: clean unmount" % what)
    cl.faultinj_set(st, "open EMFILE kind=data p=0.5 seed=3\nread EIO kind=meta p=0.5 seed=4",
                    settle=False)
    st.mount()
    check_all(what, st, want)
    cl.faultinj_set(st, "")
    check_caching_resumes(what, st, want)
    h.check("the mount still answers", os.path.isdir(st.mnt) and os.listdir(st.mnt))
    st.check_umount("clean unmount")


def test_emfile_at_reopen():
    """C1: EMFILE once at the record's reopen, then cache pressure."""
    st = cl.Stack(cache_env=cl.faultinj_env, cache_opts=("prefetch=0", "cache_size=5M"))
    x = os.urandom(2 * MiB)
    y = os.urandom(3 * MiB)
    h.write_file(st.s("x"), x)
    h.write_file(st.s("y"), y)
    h.eq("x read and cached", cl.read_whole(st.p("x")), x)
    st.stats()
    cl.drop_caches()
    # The open's reopen of x's meta file fails once: the core forgets the record.
    cl.faultinj_set(st, "open EMFILE kind=meta count=1")
    h.eq("EMFILE at x's reopen: x reads right", cl.read_whole(st.p("x")), x)
    h.check("the shim failed the reopen", cl.faultinj_failed(st, "open") >= 1,
            st.stderr()[-300:])
    cl.faultinj_set(st, "")
    st.stats()
    cl.drop_caches()
    h.eq("faults off: x reads right (the record loaded again)", cl.read_whole(st.p("x")), x)
    st.stats()
    cl.drop_caches()
    h.eq("y read (eviction makes room for it)", cl.read_whole(st.p("y")), y)
    st.stats()
    for how in ("buffered", "O_DIRECT"):
        cl.drop_caches()
        got = cl.read_whole(st.p("x")) if how == "buffered" else \
            cl.read_direct_all(st.p("x"), len(x))
        h.check("after the eviction, a %s read of x gives the source's bytes" % how, got == x,
                "%d bytes of %d%s" % (len(got), len(x),
                                      ", a page of zeros" if cl.has_zero_page(got) else ""))
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_store_faults, test_emfile_at_reopen])
