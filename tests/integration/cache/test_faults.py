#!/usr/bin/env python3
"""Faults of a misbehaving EFS, injected by efs-emu (tests/emu/README.md, "Control"), and
efscache's answer to each (docs/design.md, "Faults"):

    EIO mid-read, ESTALE (injected on read; the file replaced by another host), ENOENT
    mid-read, a source that hangs then answers, a hang interrupted by the reader, a source
    unmounted under the daemon (ENOTCONN), short reads, bytes that change between two reads
    of one range.

For each: the reader gets the source's errno or right bytes (bytes of a version the source
held), never cached bytes of another version; nothing valid is deleted (the record still
serves, from the cache, once the fault is cleared: efs-emu's read_bytes is the witness); the
daemon keeps serving other files (a cached file reads right with 0 bytes from the emu)."""

import errno
import mmap
import os
import signal
import subprocess
import sys
import threading

# seven stacks, hangs included: more than the harness's default watchdog under ASan on a
# loaded machine (meson's timeout is 900 s)
os.environ.setdefault("EFSCACHE_TEST_TIMEOUT", "840")

import cachelib as cl  # noqa: E402
from cachelib import MiB, KiB, h  # noqa: E402


def ename(err):
    return errno.errorcode.get(err, str(err)) if err else "ok"


def attempt(fn, *args):
    try:
        return 0, fn(*args)
    except OSError as e:
        return e.errno, None


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def read_direct(path, nbytes):
    """The first nbytes (a multiple of 4 KiB) of path, read with O_DIRECT: no readahead
    asks the daemon for more than that."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, nbytes)
    try:
        n = os.preadv(fd, [buf], 0)
        return bytes(buf[:n])
    finally:
        buf.close()
        os.close(fd)


def src_bytes(st, rel):
    with open(st.s(rel), "rb") as f:
        return f.read()


class Faulty:
    """A stack with three files: 'f' the one faults hit (4 MiB, not cached), 'g' cached
    (the witness that other files keep being served from the cache)."""

    def __init__(self, emu_opts=cl.EMU_FAST, cache_opts=()):
        self.st = cl.Stack(emu_opts=emu_opts, cache_opts=cache_opts)
        self.want = {"f": cl.make_file(self.st.s("f"), 4 * MiB + 123, seed=11),
                     "g": cl.make_file(self.st.s("g"), 1 * MiB + 7, seed=12)}
        cl.check_content("g cached", self.st.p("g"), self.st.s("g"), self.want["g"])
        self.st.stats()  # settled: g's chunks are written behind the replies

    def other_served(self, what):
        """g reads right, entirely from the cache."""
        st = self.st
        e0 = st.emu_file_stats("g").get("read_bytes", 0)
        err, data = attempt(read_all, st.p("g"))
        h.check("%s: another file (g) is still served" % what,
                err == 0 and cl.sha(data) == self.want["g"], ename(err))
        h.eq("%s: ... from the cache (0 bytes of g from the emu)" % what,
             st.emu_file_stats("g").get("read_bytes", 0) - e0, 0)

    def still_cached(self, what, rel, nbytes):
        """The first nbytes of rel were cached before the fault: a new open reads them
        right without a byte from the source."""
        st = self.st
        e0 = st.emu_file_stats(rel).get("read_bytes", 0)
        err, data = attempt(read_direct, st.p(rel), nbytes)
        h.check("%s: the cached part of %s reads right after the fault" % (what, rel),
                err == 0 and data == src_bytes(st, rel)[:nbytes], ename(err))
        h.eq("%s: ... and was kept (0 bytes of it refetched)" % what,
             st.emu_file_stats(rel).get("read_bytes", 0) - e0, 0)


def test_errno_mid_read():
    """EIO, ESTALE and ENOENT on the reads of a file already open, a quarter of it cached
    (no prefetch, so that what was not read is not cached)."""
    fy = Faulty(cache_opts=("prefetch=0",))
    st = fy.st
    src = src_bytes(st, "f")
    for fault, name in (("fail_eio", "EIO"), ("fail_estale", "ESTALE"),
                        ("fail_enoent", "ENOENT")):
        st.evict("f")
        fd = os.open(st.p("f"), os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, MiB)
        try:
            os.preadv(fd, [buf], 0)  # chunks 0-3 fetched and cached
            st.stats()  # written behind: wait until stored
            st.emu_set(fault, "f")
            e0 = st.emu_stats()["faults"]
            err, _ = attempt(os.preadv, fd, [buf], 2 * MiB)
            h.eq("%s on an uncached range of an open file: the reader gets %s" % (name, name),
                 ename(err), name)
            h.check("%s: the emu injected it" % name, st.emu_stats()["faults"] > e0)
            err, n = attempt(os.preadv, fd, [buf], 0)
            h.check("%s: the cached range of the same fd still reads right" % name,
                    err == 0 and bytes(buf[:n]) == src[:MiB], ename(err))
            fy.other_served(name)
            st.emu_set(fault, "")
            err, n = attempt(os.preadv, fd, [buf], 2 * MiB)
            h.check("%s cleared: the same fd reads the failed range right" % name,
                    err == 0 and bytes(buf[:n]) == src[2 * MiB:3 * MiB], ename(err))
        finally:
            os.close(fd)
            buf.close()
        cl.drop_caches()
        fy.still_cached(name, "f", MiB)
    h.check("source_errors counted", st.stats()["source_errors"] >= 3)
    st.check_umount("clean unmount")


def test_estale_replaced():
    """Another host replaces f (new file renamed over its name) after it was cached: the
    next open reads the new file, never the cached bytes of the old one."""
    fy = Faulty()
    st = fy.st
    cl.check_content("f cached", st.p("f"), st.s("f"), fy.want["f"])
    fd_old = os.open(st.p("f"), os.O_RDONLY)
    s0 = st.stats()
    old_ino = os.stat(st.e("f")).st_ino
    new = cl.make_file(st.s(".f.new"), 3 * MiB + 5, seed=13)
    os.rename(st.s(".f.new"), st.s("f"))
    e0 = st.emu_stats()
    err, data = attempt(read_all, st.p("f"))
    h.check("replaced on the source: open+read returns the new file",
            err == 0 and cl.sha(data) == new, ename(err))
    h.note("replaced on the source: emu estale %d, opens %d" % (
        cl.delta(st.emu_stats(), e0, "estale"), cl.delta(st.emu_stats(), e0, "opens")))
    err, data = attempt(cl.read_fd, fd_old)
    h.check("an fd opened before the replacement reads the old file (a server keeps an "
            "open file) or fails: never a mix",
            (err == 0 and cl.sha(data) == fy.want["f"]) or err in (errno.ESTALE, errno.EIO),
            ename(err))
    os.close(fd_old)
    h.note("replaced on another host: the old file's record %s" % (
        "was freed" if cl.delta(st.stats(), s0, "cache_entries") < 0 or not any(
            cl.read_header(m)["ino"] == old_ino for m, _ in cl.records(st.cache_dir)
            if cl.read_header(m)) else "stays until evicted"))
    fy.other_served("replaced")
    cl.drop_caches()
    e0 = st.emu_file_stats("f").get("read_bytes", 0)
    cl.check_content("replaced: the new file again", st.p("f"), st.s("f"), new)
    h.eq("replaced: the new file was cached (0 bytes refetched)",
         st.emu_file_stats("f").get("read_bytes", 0) - e0, 0)
    st.check_umount("clean unmount")


READER = r'''
import mmap, os, signal, sys
class Interrupted(Exception):
    pass
def handler(sig, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
direct = sys.argv[2] == "direct"
fd = os.open(sys.argv[1], os.O_RDONLY | (os.O_DIRECT if direct else 0))
buf = mmap.mmap(-1, 1 << 20)
print("open", flush=True)
sys.stdin.readline()
try:
    n = os.preadv(fd, [buf], 0)
    print("data %d" % n, flush=True)
except Interrupted:
    print("interrupted", flush=True)
except OSError as e:
    print("errno %d" % e.errno, flush=True)
'''


def start_reader(path, mode):
    p = subprocess.Popen([sys.executable, "-c", READER, path, mode], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    h.eq("reader (%s) opened the file" % mode, p.stdout.readline().strip(), "open")
    return p


def go(p):
    p.stdin.write("go\n")
    p.stdin.flush()


def threads_in_source(pid):
    """Daemon threads blocked in a request to the source (a FUSE mount: its kernel stack
    waits for an answer), not the ones waiting for work on /dev/fuse."""
    res = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stack" % (pid, t)) as f:
                stack = f.read()
        except OSError:
            continue
        if "fuse_" in stack and "fuse_dev_do_read" not in stack:
            res.append(t)
    return res


def test_hang_then_answers():
    """A hard mount whose server is away for a while: the reader waits, then gets right
    bytes; other files are served meanwhile; nothing is deleted."""
    fy = Faulty()
    st = fy.st
    st.emu_set("hang_ms", "1500")
    st.emu_set("hang", "f")
    res = {}

    def reader():
        res["r"] = attempt(read_all, st.p("f"))

    t = threading.Thread(target=reader)
    t.start()
    h.check("the reader of f is hanging in the source",
            cl.wait_for(lambda: st.emu_stats()["hung_now"] >= 1, 30))
    fy.other_served("while f hangs")
    t.join(120)
    h.check("the reader of f came back", not t.is_alive())
    err, data = res.get("r", (None, None))
    h.check("hang then answer: the reader gets the right bytes",
            err == 0 and data is not None and cl.sha(data) == fy.want["f"], ename(err))
    h.check("the emu hung requests", st.emu_stats()["hangs"] >= 1)
    st.emu_set("hang", "")
    cl.drop_caches()
    fy.still_cached("hang", "f", 4 * MiB)
    st.check_umount("clean unmount")


def test_hang_interrupted():
    """A source hung until we clear it: an O_DIRECT reader interrupted by a signal gets
    EINTR, a buffered reader dies at SIGKILL; neither waits for the source.  Once the
    source answers, no daemon thread is left waiting in it, the file reads right and the
    daemon unmounts cleanly."""
    fy = Faulty()
    st = fy.st
    pid = st.daemon_pid()
    st.emu_set("hang_ms", "0")  # until cleared
    direct = start_reader(st.p("f"), "direct")
    buffered = start_reader(st.p("f"), "buffered")
    st.emu_set("hang", "f")
    go(direct)
    go(buffered)
    h.check("both readers hang in the source",
            cl.wait_for(lambda: st.emu_stats()["hung_now"] >= 2, 30),
            "hung_now %d" % st.emu_stats()["hung_now"])
    fy.other_served("while f hangs")
    direct.send_signal(signal.SIGUSR1)
    try:
        out = direct.communicate(timeout=60)[0].strip()
    except subprocess.TimeoutExpired:
        direct.kill()
        out = "still blocked"
    h.eq("O_DIRECT reader + signal while the source still hangs: EINTR", out, "interrupted")
    buffered.kill()
    try:
        buffered.wait(timeout=60)
        died = True
    except subprocess.TimeoutExpired:
        died = False
    h.check("buffered reader + SIGKILL while the source still hangs: it dies", died)
    h.check("the source was still hanging", st.emu_stats()["hung_now"] >= 1)
    fy.other_served("after the interrupts")
    # unmount while a worker still waits in the source: the mount goes at once, the
    # daemon stays until the source answers (nothing interrupts a hard mount's call)
    r = cl.run(["fusermount3", "-u", st.mnt], timeout=60)
    h.check("unmount while the source hangs: fusermount3 -u returns and the mount is gone",
            r.returncode == 0 and not h.is_mounted(st.mnt), r.stderr)
    h.check("... the daemon waits for the source in one thread",
            len(threads_in_source(pid)) >= 1, str(threads_in_source(pid)))
    st.emu_set("hang", "")
    gone = cl.wait_for(lambda: not st.m.daemon_pids(), 60)
    h.check("source answered: the daemon exits", gone)
    st.check_umount("clean unmount")
    st.mount()
    cl.drop_caches()
    cl.check_content("source answered: f reads right", st.p("f"), st.s("f"), fy.want["f"])
    st.check_umount("clean unmount")


def test_enotconn():
    """The source's mount dies under the daemon (efs-emu killed: ENOTCONN).  Reads fail
    with the source's errno, the daemon stays up and answers queries, nothing is deleted:
    once the source is back and efscache remounted, cached files are served from the
    cache."""
    fy = Faulty()
    st = fy.st
    cl.check_content("f cached", st.p("f"), st.s("f"), fy.want["f"])
    nrec = len(cl.records(st.cache_dir))
    for p in st.emu_m.daemon_pids():
        os.kill(p, signal.SIGKILL)
    cl.wait_for(lambda: attempt(os.listdir, st.emu)[0] == errno.ENOTCONN, 10)
    h.eq("the emu mount is dead", ename(attempt(os.listdir, st.emu)[0]), "ENOTCONN")
    cl.drop_caches()
    for rel in ("f", "g"):
        err, data = attempt(read_all, st.p(rel))
        h.check("source unmounted: %s (cached) gives an errno, never wrong bytes" % rel,
                err != 0 or cl.sha(data) == fy.want[rel], ename(err))
        h.note("source unmounted: reading cached %s through the mount: %s" % (rel, ename(err)))
    h.check("the daemon still answers (stats query)", attempt(st.stats, False)[0] == 0)
    h.eq("source unmounted: no record deleted", len(cl.records(st.cache_dir)), nrec)
    # the source comes back: a new emu mount at the same place
    subprocess.run(["fusermount3", "-u", "-z", st.emu], capture_output=True)
    st.emu_m.umount()
    st.emu_m = h.mount_emu(st.src, st.emu, *cl.EMU_FAST)
    cl.no_readahead(st.emu_m)
    err, _ = attempt(read_all, st.p("g"))
    h.note("source back, same efscache daemon: reading g gives %s" % ename(err))
    # SOURCE's path now leads to another mount: the daemon sees it at its next look
    # (srcwatch.c: every 2 s, sooner after a failed read at the root), unmounts and exits 1
    # so that a restart serves the new tree.  Wait for that rather than race it with an
    # unmount of our own (which then failed with EINVAL: nothing mounted there any more),
    # and by the mount table: os.path.ismount() is already false while the daemon tears
    # its mount down (a stat of the path fails), and the TSan build once unmounted then.
    h.check("source back as another mount: efscache unmounted itself",
            cl.wait_for(lambda: not h.fuse_mounts_at(st.mnt), 60))
    m = st.m
    probs = st.umount()
    h.check("... and its daemon exited", not probs, "; ".join(probs))
    h.eq("... with status 1 (source lost)", m.exit_code, 1)
    st.mount()
    for rel in ("f", "g"):
        e0 = st.emu_file_stats(rel).get("read_bytes", 0)
        cl.check_content("remounted: %s right" % rel, st.p(rel), st.s(rel), fy.want[rel])
        h.eq("remounted: %s from the cache (nothing was deleted)" % rel,
             st.emu_file_stats(rel).get("read_bytes", 0) - e0, 0)
    st.check_umount("clean unmount")


def test_short_reads():
    """The source answers reads short of what was asked, before its end.  FUSE takes a
    short read for the end of the file, so serving it would truncate the file for the
    application: the reader gets EIO, never a short file, and nothing short is cached."""
    fy = Faulty()
    st = fy.st
    small = cl.make_file(st.s("s"), 100 * KiB, seed=14)
    st.emu_set("short_reads", "[fs]")
    for rel, want in (("f", fy.want["f"]), ("s", small)):
        err, data = attempt(read_all, st.p(rel))
        h.check("short reads on %s: EIO or the right bytes, never a truncated file" % rel,
                (err == errno.EIO) or (err == 0 and cl.sha(data) == want),
                "%s, %s bytes" % (ename(err), len(data) if data else 0))
        h.note("short reads on %s: %s" % (rel, ename(err)))
    h.check("the emu answered short", st.emu_stats()["faults"] > 0)
    fy.other_served("short reads")
    st.emu_set("short_reads", "")
    cl.drop_caches()
    for rel, want in (("f", fy.want["f"]), ("s", small)):
        cl.check_content("cleared: %s right" % rel, st.p(rel), st.s(rel), want)
    cl.drop_caches()
    fy.still_cached("short reads cleared", "f", 4 * MiB)
    st.check_umount("clean unmount")


def attributable(data, orig):
    """Number of bytes of data that are neither the original's nor its inverse at their
    offset (the two versions flip_reads alternates between).  Per byte, not per page: the
    emulated writer rewrites the file while other reads are in flight, so the source itself
    may hold a page half rewritten when it is read."""
    x = (int.from_bytes(data, "little") ^ int.from_bytes(orig[:len(data)], "little")).to_bytes(
        len(data), "little")
    return len(x.translate(None, b"\x00\xff"))


def test_bytes_change_between_reads():
    """Another host rewrites f between every two reads (flip_reads: the whole file is
    inverted before each read request): a reader sees bytes of the versions the source held
    while it read (a torn read, as on NFS), and once the changes stop, the next open reads
    exactly what the source holds: no page of an earlier version comes from the cache."""
    fy = Faulty()
    st = fy.st
    # a file of its own, 1 MiB: every read request rewrites all of it
    cl.make_file(st.s("c"), MiB + 4096, seed=15)
    orig = src_bytes(st, "c")
    st.emu_set("flip_reads", "c")
    for rnd in range(3):
        err, data = attempt(read_all, st.p("c"))
        h.check("round %d: the read succeeds with the file's length" % rnd,
                err == 0 and len(data) == len(orig), ename(err))
        if data:
            h.eq("round %d: bytes of no version the source held" % rnd,
                 attributable(data, orig), 0)
    h.check("the emu changed the file between reads", st.emu_stats()["faults"] >= 2)
    fy.other_served("bytes changing")
    st.emu_set("flip_reads", "")
    now = src_bytes(st, "c")
    for rnd in range(2):
        cl.drop_caches()
        err, data = attempt(read_all, st.p("c"))
        h.check("changes stopped, open %d: exactly the source's bytes" % rnd,
                err == 0 and data == now,
                "%s, %d pages differ" % (ename(err), sum(
                    1 for i in range(0, len(now), 4096)
                    if not data or data[i:i + 4096] != now[i:i + 4096])))
    cl.drop_caches()
    fy.still_cached("bytes changed", "c", MiB + 4096)
    st.check_umount("clean unmount")


if __name__ == "__main__":
    tests = [test_errno_mid_read, test_estale_replaced, test_hang_then_answers,
             test_hang_interrupted, test_enotconn, test_short_reads,
             test_bytes_change_between_reads]
    only = [t for t in tests if t.__name__ in sys.argv[1:]]
    cl.main(only or tests)
