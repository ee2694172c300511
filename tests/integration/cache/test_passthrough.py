#!/usr/bin/env python3
"""Kernel passthrough of fully cached files (issue 11, include/passthrough.h).

On a -o ro mount a read-only open of a file whose every chunk is cached and verified is
answered with a backing file (the cache's data file): read() and mmap() then reach neither
efscache (its `reads` counter) nor efs-emu (its read counters), and return the source's
bytes.  A partly cached file is not passthrough.  On a rw mount passthrough=auto is off
and the log says why (beside a passthrough open the kernel would refuse a writer).  A
source change seen at a later open: EBUSY while passthrough opens of the old version
exist (never the old bytes), then, once they are closed, a non-passthrough open with the
new bytes.  Eviction pressure (a tiny cache_size) never changes the bytes a passthrough
open reads; kill -9 with passthrough opens, then a remount with the same cache_dir,
returns the right bytes.

Exits 77 only when this build has no passthrough (built against libfuse < 3.17): the
daemon's log line saying so is the skip reason.  Any other mount where passthrough does
not happen is a failure."""

import errno
import mmap
import os
import signal
import subprocess
import sys

import cachelib as cl
from cachelib import MiB, h

SIZE = 3 * MiB + 17
RO_PT = ("ro", "passthrough=auto")


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def mmap_all(path):
    with open(path, "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            return m[:]


def settle(st, held=0):
    """Wait until the daemon has released every handle but the `held` ones: the kernel
    sends RELEASE after close() returns, and an open that arrives before it is answered
    in cached mode (the daemon's counts may only be higher than the kernel's)."""
    cl.wait_for(lambda: st.stats().get("open_files", 0) <= held, 10)


def fill(st, rel, held=0):
    """Read rel whole through the mount (caches every chunk, verified by this daemon)."""
    data = read_all(st.p(rel))
    settle(st, held)
    return data


def pt_opens(st):
    return st.stats().get("passthrough_opens", 0)


def replace_source(st, rel, size, seed):
    """Rewrite the SOURCE file in place (same inode, new mtime and bytes)."""
    tmp = st.s(rel + ".new")
    new = cl.make_file(tmp, size, seed=seed)
    with open(tmp, "rb") as src, open(st.s(rel), "r+b") as dst:
        dst.write(src.read())
    os.unlink(tmp)
    return new


def require_passthrough():
    """Exit 77 when this build has no passthrough (the daemon says so in its log)."""
    st = cl.Stack(cache_opts=RO_PT)
    st.stats()  # the daemon logs why passthrough is off at the kernel's INIT: done by now
    log = st.stderr()
    why = [ln for ln in log.splitlines() if "passthrough: off: built against libfuse" in ln]
    st.umount()
    if why:
        h.note("SKIP: this build has no kernel passthrough (libfuse < 3.17 at build time): "
               + why[0].strip())
        h.cleanup()
        sys.exit(77)


def test_ro_full_partial_changed():
    st = cl.Stack(cache_opts=RO_PT)
    want = cl.make_file(st.s("f"), SIZE, seed=1)
    h.eq("first read (fills the cache): right bytes", cl.sha(fill(st, "f")), want)

    # fully cached: no READ reaches efscache or the emu, read() and mmap() alike
    cl.drop_caches()
    s0, e0 = st.stats(), st.emu_stats()
    h.eq("passthrough read(): right bytes", cl.sha(read_all(st.p("f"))), want)
    settle(st)
    h.eq("passthrough mmap(): right bytes", cl.sha(mmap_all(st.p("f"))), want)
    settle(st)
    with open(st.p("f"), "rb") as f:
        f.seek(SIZE - 100)
        h.eq("passthrough read at the end: right bytes", f.read(1000),
             cl.read_range(st.s("f"), SIZE - 100, 100))
    settle(st)
    s1, e1 = st.stats(), st.emu_stats()
    h.eq("passthrough: READ requests reaching efscache", cl.delta(s1, s0, "reads"), 0)
    h.eq("passthrough: bytes served by efscache", cl.delta(s1, s0, "bytes_served"), 0)
    h.eq("passthrough: emu read_ops", cl.delta(e1, e0, "read_ops"), 0)
    h.eq("passthrough: emu read_bytes", cl.delta(e1, e0, "read_bytes"), 0)
    h.eq("passthrough_opens counted", cl.delta(s1, s0, "passthrough_opens"), 3)
    if cl.delta(s1, s0, "passthrough_opens") == 0:
        h.note("daemon log:\n" + st.stderr()[-2000:])

    # partly cached: not passthrough, and right bytes.  One small read near the end of a
    # 12 MiB file: not sequential, so nothing is fetched ahead of it.
    gsize = 12 * MiB + 17
    gwant = cl.make_file(st.s("g"), gsize, seed=2)
    fd = os.open(st.p("g"), os.O_RDONLY)
    os.pread(fd, 4096, gsize - 5000)
    os.close(fd)
    settle(st)
    cached = st.status("g").get("cached_bytes", 0)
    h.check("partly cached: some but not all of g cached", 0 < cached < gsize // 2,
            str(st.status("g")))
    s0 = st.stats()
    h.eq("partly cached: right bytes", cl.sha(read_all(st.p("g"))), gwant)
    settle(st)
    s1 = st.stats()
    h.eq("partly cached: not passthrough", cl.delta(s1, s0, "passthrough_opens"), 0)
    h.check("partly cached: reads reach efscache", cl.delta(s1, s0, "reads") > 0, str(s1))

    # the source changes (no open held): the next open is not passthrough, new bytes
    new = replace_source(st, "f", SIZE, seed=3)
    s0 = st.stats()
    h.eq("after a source change: new bytes", cl.sha(fill(st, "f")), new)
    s1 = st.stats()
    h.eq("after a source change: that open is not passthrough",
         cl.delta(s1, s0, "passthrough_opens"), 0)
    h.check("after a source change: the record was reset",
            cl.delta(s1, s0, "stale_dropped") >= 1, str(s1))
    cl.drop_caches()
    s0 = st.stats()
    h.eq("cached again: passthrough with the new bytes", cl.sha(read_all(st.p("f"))), new)
    settle(st)
    h.eq("cached again: passthrough", cl.delta(st.stats(), s0, "passthrough_opens"), 1)

    # beside a passthrough open: a second reader shares it, evict is refused (EBUSY), a
    # writer is refused by the ro mount (EROFS, the source untouched), and a source change
    # makes new opens fail with EBUSY while the open one keeps its version's bytes
    fd = os.open(st.p("f"), os.O_RDONLY)
    mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    s0 = st.stats()
    h.eq("writer on the ro mount: EROFS",
         h.errno_of(os.open, st.p("f"), os.O_WRONLY | os.O_TRUNC), errno.EROFS)
    h.eq("O_TRUNC refused: source size unchanged", os.path.getsize(st.s("f")), SIZE)
    h.eq("evict beside passthrough: EBUSY", h.errno_of(st.evict, "f"), errno.EBUSY)
    h.eq("second reader shares the passthrough", cl.sha(fill(st, "f", held=1)), new)
    h.eq("second reader: passthrough", cl.delta(st.stats(), s0, "passthrough_opens"), 1)
    newer = replace_source(st, "f", SIZE, seed=4)
    s0 = st.stats()
    h.eq("reader of a changed source beside passthrough: EBUSY (never the old bytes)",
         h.errno_of(os.open, st.p("f"), os.O_RDONLY), errno.EBUSY)
    h.eq("and again: EBUSY while the passthrough open exists",
         h.errno_of(os.open, st.p("f"), os.O_RDONLY), errno.EBUSY)
    h.eq("the passthrough open keeps its version (read)",
         cl.sha(os.pread(fd, SIZE + 10, 0)), new)
    h.eq("the passthrough open keeps its version (mmap)", cl.sha(mm[:]), new)
    h.eq("refused opens counted", cl.delta(st.stats(), s0, "passthrough_refused"), 2)
    h.check("refusal logged", "passthrough: refused an open" in st.stderr(),
            st.stderr()[-1000:])
    mm.close()
    os.close(fd)
    settle(st)
    s0 = st.stats()
    h.eq("after the last passthrough close: the newer bytes", cl.sha(fill(st, "f")), newer)
    s1 = st.stats()
    h.eq("after the last passthrough close: not passthrough",
         cl.delta(s1, s0, "passthrough_opens"), 0)
    h.check("after the last passthrough close: the record was reset",
            cl.delta(s1, s0, "stale_dropped") >= 1, str(s1))
    s0 = st.stats()
    h.eq("cached again: passthrough with the newer bytes", cl.sha(fill(st, "f")), newer)
    h.eq("cached again after the change: passthrough",
         cl.delta(st.stats(), s0, "passthrough_opens"), 1)
    st.check_umount("clean unmount")


def test_rw_auto_is_off():
    st = cl.Stack()  # passthrough=auto is the default; the mount is read-write
    want = cl.make_file(st.s("f"), SIZE, seed=5)
    fill(st, "f")
    cl.drop_caches()
    s0 = st.stats()
    fd = os.open(st.p("f"), os.O_RDONLY)
    h.eq("rw mount: right bytes", cl.sha(os.pread(fd, SIZE + 10, 0)), want)
    # the POSIX contract passthrough would break: a writer opens beside the reader
    try:
        wfd = os.open(st.p("f"), os.O_WRONLY)
        os.pwrite(wfd, b"XY", 10)
        os.close(wfd)
        h.check("rw mount: a writer opens beside a reader", True)
    except OSError as e:
        h.check("rw mount: a writer opens beside a reader", False, str(e))
    os.close(fd)
    settle(st)
    s1 = st.stats()
    h.eq("rw mount: no passthrough open", cl.delta(s1, s0, "passthrough_opens"), 0)
    h.check("rw mount: reads reach efscache", cl.delta(s1, s0, "reads") > 0, str(s1))
    h.eq("rw mount: the write reached the source", cl.read_range(st.s("f"), 10, 2), b"XY")
    log = [ln for ln in st.stderr().splitlines() if "passthrough: off:" in ln]
    h.eq("rw mount: one log line says why passthrough is off", len(log), 1, str(log))
    h.check("rw mount: the log line gives the reason", any("read-write" in ln for ln in log),
            str(log))
    st.check_umount("clean unmount (rw)")


def test_ro_passthrough_off():
    st = cl.Stack(cache_opts=("ro", "passthrough=off"))
    want = cl.make_file(st.s("f"), SIZE, seed=6)
    fill(st, "f")
    cl.drop_caches()
    s0 = st.stats()
    h.eq("passthrough=off: right bytes", cl.sha(read_all(st.p("f"))), want)
    settle(st)
    s1 = st.stats()
    h.eq("passthrough=off: no passthrough open", cl.delta(s1, s0, "passthrough_opens"), 0)
    h.check("passthrough=off: reads reach efscache", cl.delta(s1, s0, "reads") > 0, str(s1))
    h.check("passthrough=off: nothing logged about passthrough",
            "passthrough: off" not in st.stderr(), st.stderr()[-1000:])
    st.check_umount("clean unmount (off)")


def test_eviction_pressure():
    # 6 files of 1.5 MiB in a 4 MiB cache: each passthrough open is held while the others
    # are read (and evicted); the held ones must keep returning their bytes
    st = cl.Stack(cache_opts=RO_PT + ("cache_size=4M", "cache_min_free=0%"))
    names = ["e%d" % i for i in range(6)]
    want = {n: cl.make_file(st.s(n), 3 * MiB // 2 + 1000 * i, seed=10 + i)
            for i, n in enumerate(names)}
    held = []
    bad = []
    for rnd in range(3):
        for n in names:
            got = fill(st, n, held=len(held))
            if cl.sha(got) != want[n]:
                bad.append("fill %s round %d" % (n, rnd))
            try:
                fd = os.open(st.p(n), os.O_RDONLY)
            except OSError as e:
                bad.append("open %s: %s" % (n, e))
                continue
            held.append((n, fd, mmap.mmap(fd, 0, prot=mmap.PROT_READ)))
            if len(held) > 2:
                hn, hfd, hmm = held.pop(0)
                if cl.sha(os.pread(hfd, 4 * MiB, 0)) != want[hn]:
                    bad.append("held read %s" % hn)
                if cl.sha(hmm[:]) != want[hn]:
                    bad.append("held mmap %s" % hn)
                hmm.close()
                os.close(hfd)
            for hn, hfd, hmm in held:
                if cl.sha(os.pread(hfd, 4 * MiB, 0)) != want[hn]:
                    bad.append("held read %s under pressure" % hn)
    for hn, hfd, hmm in held:
        hmm.close()
        os.close(hfd)
    settle(st)
    s = st.stats()
    h.eq("eviction pressure with passthrough opens: every byte right", bad, [])
    h.check("passthrough was used under pressure", s.get("passthrough_opens", 0) > 0, str(s))
    h.check("eviction happened", s.get("evictions", 0) > 0, str(s))
    for n in names:
        cl.check_content("after pressure: %s" % n, st.p(n), st.s(n), want[n])
    st.check_umount("clean unmount (pressure)")


def test_kill9_with_passthrough_opens():
    st = cl.Stack(cache_opts=RO_PT)
    want = {n: cl.make_file(st.s(n), SIZE, seed=20 + i) for i, n in enumerate("ab")}
    for n in "ab":
        fill(st, n)
    fds = [os.open(st.p(n), os.O_RDONLY) for n in "ab"]
    mms = [mmap.mmap(fd, 0, prot=mmap.PROT_READ) for fd in fds]
    h.eq("passthrough opens before the kill", pt_opens(st), 2)
    pid = st.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    try:
        st.m.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for m in mms:
        m.close()
    for fd in fds:
        try:
            os.close(fd)  # the fd is gone either way; FLUSH to a dead daemon: ENOTCONN
        except OSError:
            pass
    r = cl.run(["fusermount3", "-u", "-z", st.mnt])
    h.check("fusermount3 -uz after kill -9", r.returncode == 0, r.stderr)
    st.m.umount()
    st.m = None
    st.mount()
    for n in "ab":
        cl.check_content("after kill -9 and remount: %s" % n, st.p(n), st.s(n), want[n])
    settle(st)
    s0 = st.stats()
    for n in "ab":
        h.eq("after remount, passthrough again: %s" % n, cl.sha(fill(st, n)), want[n])
    h.eq("after remount: passthrough opens", cl.delta(st.stats(), s0, "passthrough_opens"), 2)
    st.check_umount("clean unmount (kill9)")


def test_reader_outlives_daemon():
    """A model server keeps reading a passthrough file (read and mmap) while efscache is
    SIGKILLed and replaced on the same cache_dir, and the new daemon, which does not know
    that reader, evicts the file's record under pressure and then caches a new version of
    it after a change on the source: the reader still gets exactly the bytes it opened.
    (The next daemon once evicted the record by punching holes in the data file the
    kernel read for that reader: zeros in 61 of 64 MiB.)"""
    size = 24 * MiB + 7
    st = cl.Stack(cache_opts=RO_PT + ("cache_size=40M", "cache_min_free=0%"))
    want = cl.make_file(st.s("model"), size, seed=30)
    h.eq("model: first read", cl.sha(fill(st, "model")), want)
    s0 = st.stats()
    fd = os.open(st.p("model"), os.O_RDONLY)
    mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    h.eq("model: open with passthrough", cl.delta(st.stats(), s0, "passthrough_opens"), 1)
    h.eq("model: mmap reads right before the kill", cl.sha(mm[:]), want)

    os.kill(st.daemon_pid(), signal.SIGKILL)
    try:
        st.m.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    h.eq("after kill -9: the passthrough reader still reads", cl.sha(os.pread(fd, size, 0)),
         want)
    r = cl.run(["fusermount3", "-u", "-z", st.mnt])
    h.check("fusermount3 -uz after kill -9", r.returncode == 0, r.stderr)
    st.m.umount()
    st.m = None
    st.mount()

    # Pressure: two other files of 24 MiB in a 40 MiB cache; the model's record is the
    # coldest, complete, and goes whole (unlinked), never punched.
    others = {n: cl.make_file(st.s(n), 24 * MiB, seed=31 + i) for i, n in enumerate("xy")}
    for n in "xy":
        h.eq("pressure: %s reads right" % n, cl.sha(fill(st, n)), others[n])
    h.check("pressure: eviction happened", st.stats().get("evictions", 0) > 0,
            str(st.stats()))
    h.eq("under pressure: read() of the outliving reader", cl.sha(os.pread(fd, size, 0)),
         want)
    h.eq("under pressure: mmap of the outliving reader", cl.sha(mm[:]), want)

    # A new version on the source, cached by the new daemon: a new data file.
    new = replace_source(st, "model", size, seed=33)
    cl.drop_caches()
    h.eq("new version reads through the mount", cl.sha(fill(st, "model")), new)
    h.eq("after the change: read() of the outliving reader", cl.sha(os.pread(fd, size, 0)),
         want)
    h.eq("after the change: mmap of the outliving reader", cl.sha(mm[:]), want)
    mm.close()
    try:
        os.close(fd)
    except OSError:
        pass
    settle(st)
    st.check_umount("clean unmount (outliving reader)")


if __name__ == "__main__":
    h.require_fuse()
    require_passthrough()
    cl.main([test_ro_full_partial_changed, test_rw_auto_is_off, test_ro_passthrough_off,
             test_eviction_pressure, test_kill9_with_passthrough_opens,
             test_reader_outlives_daemon])
