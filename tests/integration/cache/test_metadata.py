#!/usr/bin/env python3
"""The metadata consistency model (DESIGN rule 13, docs/design.md "Metadata"), against
efs-emu in its NFS-like mode (attributes and names cached by the emulated NFS client,
refreshed at open, statx FORCE_SYNC reaching the "server"), with its counters as witness:

- an open of a valid cached file costs exactly one metadata request at the server and no
  data request; a cold first read costs no more requests than reading EFS directly;
- a file changed in place (same size, old mtime restored), truncated, replaced by rename
  over its name, or deleted on the source is seen at the next open while names are cached;
- a new name and a removed name are seen once the directory's window (acdirmin) passed;
  a negative entry expires; lookupcache=positive does not cache it; strict asks every time;
- with nocto, an open inside the attribute window asks nothing; ttl=never never again."""

import os
import time

import cachelib as cl
from cachelib import KiB, h

# The emulated NFS client: short windows so the test can wait them out.
EMU_NFS = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "acregmin=1", "acdirmin=1")
# efscache's own windows, short for the same reason.
SHORT = ("acregmin=1", "acregmax=1", "acdirmin=1", "acdirmax=1")


# efscache's own count of the kernel's requests (the per-open cost the emulator cannot see).
KERNEL = ("kernel_lookups", "kernel_getattrs", "kernel_opens", "kernel_flushes",
          "kernel_releases", "kernel_readdirs")


def kernel(st):
    s = st.stats()
    return {k: s.get(k, 0) for k in KERNEL}


def drops():
    """How many times anyone dropped the kernel's caches (other tests on the machine do):
    a warm-cache count is only meaningful if this did not move."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("drop_slab "):
                return int(line.split()[1])
    return 0


def meta(e):
    return {k: e.get(k, 0) for k in ("lookups", "getattrs", "opens", "readdirs", "read_ops")}


def diff(after, before):
    return {k: after[k] - before[k] for k in after}


def read_once(path):
    with open(path, "rb") as f:
        return f.read()


def test_one_round_trip_per_open():
    st = cl.Stack(emu_opts=EMU_NFS)
    want = cl.make_file(st.s("f"), 100 * KiB, seed=1)
    cl.check_content("first read", st.p("f"), st.s("f"), want)
    st.stats()  # written behind: wait until stored
    for rnd in range(3):
        before = meta(st.emu_stats())
        data = read_once(st.p("f"))
        got = diff(meta(st.emu_stats()), before)
        h.eq("open %d of a valid cached file: right bytes" % rnd, cl.sha(data), want)
        h.eq("open %d of a valid cached file: exactly one GETATTR reaches the source, "
             "nothing else" % rnd, got,
             {"lookups": 0, "getattrs": 1, "opens": 0, "readdirs": 0, "read_ops": 0})
    st.check_umount("clean unmount")


def test_cold_no_more_than_efs():
    st = cl.Stack(emu_opts=EMU_NFS)
    for n in ("direct", "cached"):
        cl.make_file(st.s(n), 20 * KiB, seed=len(n))
    before = meta(st.emu_stats())
    read_once(st.e("direct"))
    efs = diff(meta(st.emu_stats()), before)
    before = meta(st.emu_stats())
    read_once(st.p("cached"))
    ours = diff(meta(st.emu_stats()), before)
    h.note("first read of a small file: EFS directly %s, through efscache %s" % (efs, ours))
    h.check("a cold first read through efscache costs no more requests than EFS directly",
            sum(ours.values()) <= sum(efs.values()), "efs %s efscache %s" % (efs, ours))
    st.check_umount("clean unmount")


def test_changes_seen_at_open():
    st = cl.Stack(emu_opts=EMU_NFS)
    size = 64 * KiB
    cl.make_file(st.s("f"), size, seed=3)
    for rnd in range(2):
        cl.check_content("warm-up %d" % rnd, st.p("f"), st.s("f"))
    # in place, same size, mtime put back (only ctime tells)
    old = os.stat(st.s("f"))
    with open(st.s("f"), "r+b") as f:
        f.write(b"CHANGED IN PLACE")
    os.utime(st.s("f"), ns=(old.st_atime_ns, old.st_mtime_ns))
    cl.check_content("in place, same size, old mtime: next open sees new bytes",
                     st.p("f"), st.s("f"))
    os.truncate(st.s("f"), size // 3)
    h.eq("truncated: size right after the next open", cl.size_after_open(st.p("f")), size // 3)
    cl.check_content("truncated: next open sees the short file", st.p("f"), st.s("f"))
    new = cl.make_file(st.s(".f.tmp"), size, seed=4)
    os.rename(st.s(".f.tmp"), st.s("f"))
    cl.check_content("replaced by rename while names are cached: next open sees the new "
                     "file", st.p("f"), st.s("f"), new)
    os.unlink(st.s("f"))
    h.check_errno("deleted: next open fails with ENOENT", read_once, (st.p("f"),),
                  expected={2})
    st.check_umount("clean unmount")


def test_names_within_window():
    st = cl.Stack(emu_opts=EMU_NFS, cache_opts=SHORT)
    os.mkdir(st.s("d"))
    cl.make_file(st.s("d/old"), 4 * KiB, seed=5)
    h.eq("listing", sorted(os.listdir(st.p("d"))), ["old"])
    h.check("a missing name is missing", not os.path.lexists(st.p("d/new")))
    cl.make_file(st.s("d/new"), 4 * KiB, seed=6)
    os.unlink(st.s("d/old"))
    time.sleep(2.5)  # efscache's and the emulated client's 1 s windows, with margin
    h.check("a new file is seen once the window passed (negative entry expired)",
            os.path.exists(st.p("d/new")))
    h.check("a removed file is gone once the window passed", not os.path.lexists(st.p("d/old")))
    h.eq("the listing shows the change", sorted(os.listdir(st.p("d"))), ["new"])
    st.check_umount("clean unmount")


def test_lookupcache_modes():
    # The emulated client caches no names here, so every lookup efscache makes is counted.
    emu = EMU_NFS + ("lookupcache=none",)
    for opts, cached in ((("lookupcache=positive",), False), (("strict",), False),
                         ((), True)):
        st = cl.Stack(emu_opts=emu, cache_opts=opts)
        h.check("%s: missing" % (opts,), not os.path.lexists(st.p("late")))
        before = meta(st.emu_stats())
        h.check("%s: still missing" % (opts,), not os.path.lexists(st.p("late")))
        asked = diff(meta(st.emu_stats()), before)["lookups"]
        if cached:
            h.eq("%s: the negative entry is cached: no lookup reaches the source" % (opts,),
                 asked, 0)
        else:
            h.eq("%s: no negative caching: the lookup reaches the source" % (opts,),
                 asked, 1)
        st.check_umount("clean unmount %s" % (opts,))


def test_relaxed_modes():
    for opts in (("nocto", "acregmin=60", "acregmax=60"), ("ttl=never",)):
        st = cl.Stack(emu_opts=EMU_NFS, cache_opts=opts)
        cl.make_file(st.s("f"), 16 * KiB, seed=7)
        cl.check_content("%s: first read" % (opts,), st.p("f"), st.s("f"))
        st.stats()
        before = meta(st.emu_stats())
        for _ in range(3):
            read_once(st.p("f"))
        h.eq("%s: opens inside the window ask the source nothing" % (opts,),
             diff(meta(st.emu_stats()), before),
             {"lookups": 0, "getattrs": 0, "opens": 0, "readdirs": 0, "read_ops": 0})
        st.check_umount("clean unmount %s" % (opts,))


def test_reader_close_sends_no_flush():
    """A read-only open is answered FOPEN_NOFLUSH: its close(2) does not wait for a FLUSH
    round trip.  A writer's close still flushes (deferred write errors, close-to-open)."""
    st = cl.Stack(emu_opts=EMU_NFS)
    cl.make_file(st.s("f"), 8 * KiB, seed=11)
    read_once(st.p("f"))
    before = kernel(st)
    for _ in range(3):
        read_once(st.p("f"))
    got = diff(kernel(st), before)
    h.eq("3 read-only opens and closes: no FLUSH reaches the daemon", got["kernel_flushes"], 0)
    h.eq("... one OPEN each", got["kernel_opens"], 3)
    before = kernel(st)
    with open(st.p("f"), "r+b") as f:
        f.write(b"x")
    h.eq("a writer's close flushes", diff(kernel(st), before)["kernel_flushes"], 1)
    st.check_umount("clean unmount")


def _lock_then_close(path, ready, go):
    """Child: open path read-only, take a read lock, close that fd, say so, and stay alive
    (its exit would drop the lock anyway) until told."""
    import fcntl
    fd = os.open(path, os.O_RDONLY)
    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    os.close(fd)
    os.write(ready, b"1")
    os.read(go, 1)
    os._exit(0)


def test_noflush_close_drops_locks():
    """POSIX: closing any fd of a file drops the closer's fcntl locks on it.  A read-only
    handle's close sends no FLUSH (above), so the locks taken through it go at its RELEASE:
    another process can then take a conflicting lock without the first one exiting."""
    import fcntl
    st = cl.Stack(emu_opts=EMU_NFS)
    cl.make_file(st.s("lk"), 4 * KiB, seed=12)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _lock_then_close(st.p("lk"), w1, r2)
        finally:
            os._exit(1)
    os.read(r1, 1)
    fd = os.open(st.p("lk"), os.O_RDWR)

    def try_lock():
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
    # RELEASE is sent after close(2) returns: allow it to arrive.
    got = cl.wait_for(try_lock, 10)
    h.check("the read lock went with the close of its read-only fd: a write lock is granted "
            "while its owner still runs", got)
    os.close(fd)
    os.write(w2, b"1")
    os.waitpid(pid, 0)
    for x in (r1, w1, r2, w2):
        os.close(x)
    st.check_umount("clean unmount")


def test_immutable_opens_ask_nothing():
    """-o immutable: after the first open (answered ENOSYS) the kernel opens files and
    directories itself: opening, reading from its page cache and closing cost no request to
    the daemon and none to the source; reads of a file the kernel has no pages of come
    without a handle and are served from the cache; listings, stat and locks (the kernel's
    own) work; writes are refused."""
    import errno
    import fcntl
    st = cl.Stack(emu_opts=EMU_NFS, cache_opts=("immutable",))
    os.makedirs(st.s("d/sub"))
    want = {}
    for n in ("a", "b", "sub/c"):
        want[n] = cl.make_file(st.s("d", n), 20 * KiB, seed=len(n) + 20)
    for n in want:
        cl.check_content("immutable: first read of %s" % n, st.p("d", n), st.s("d", n), want[n])
    h.eq("immutable: listing", sorted(os.listdir(st.p("d"))), ["a", "b", "sub"])
    st.stats()
    k0, e0, d0 = kernel(st), meta(st.emu_stats()), drops()
    for _ in range(3):
        for n in want:
            h.eq("immutable: warm read of %s" % n, cl.sha(read_once(st.p("d", n))), want[n])
        os.listdir(st.p("d"))
    k, e = diff(kernel(st), k0), diff(meta(st.emu_stats()), e0)
    h.eq("immutable: warm opens and closes: no OPEN, FLUSH or RELEASE reaches the daemon",
         {x: k[x] for x in ("kernel_opens", "kernel_flushes", "kernel_releases")},
         {"kernel_opens": 0, "kernel_flushes": 0, "kernel_releases": 0})
    if drops() == d0:
        h.eq("immutable: ... nor READDIR (the kernel keeps the listing)", k["kernel_readdirs"], 0)
        h.eq("immutable: ... and nothing reaches the source", e,
             {"lookups": 0, "getattrs": 0, "opens": 0, "readdirs": 0, "read_ops": 0})
    else:
        h.note("someone dropped the kernel's caches meanwhile: the warm counts are not checked")
    # The kernel's pages gone (and its names): reads without a handle, from the cache.
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    for n in want:
        h.eq("immutable: read after drop_caches of %s" % n, cl.sha(read_once(st.p("d", n))),
             want[n])
    h.eq("immutable: after drop_caches no data is read from the source",
         diff(meta(st.emu_stats()), e0)["read_ops"], 0)
    h.eq("immutable: stat", os.stat(st.p("d/a")).st_size, 20 * KiB)
    with open(st.p("d/a"), "rb") as f:
        fcntl.lockf(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # the kernel's own
        h.eq("immutable: lseek SEEK_END", os.lseek(f.fileno(), 0, os.SEEK_END), 20 * KiB)
    h.check_errno("immutable: a write open is refused (read-only)", open, (st.p("d/a"), "r+b"),
                  expected={errno.EROFS})
    st.check_umount("clean unmount")


h.run_tests([test_one_round_trip_per_open, test_cold_no_more_than_efs, test_changes_seen_at_open,
             test_names_within_window, test_lookupcache_modes, test_relaxed_modes,
             test_reader_close_sends_no_flush, test_noflush_close_drops_locks,
             test_immutable_opens_ask_nothing])
