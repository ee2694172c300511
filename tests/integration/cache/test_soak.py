#!/usr/bin/env python3
"""Soak: everything at once, for a bounded time, with zero wrong bytes and zero hangs.

    readers     READERS processes (buffered, O_DIRECT and mmap reads, page-aligned) over a
                tree of FILES files on efs-emu (NFS-like caching, its default)
    mutator     rewrites files in place (same inode, new size), truncates them, replaces them
                (a new file renamed over the name) and deletes them (re-created later), all
                directly in SOURCE, as another host would
    corrupter   flips bytes of the cache's data and metadata files: while the daemon is down
                (any verify mode must catch them) and, in epochs mounted with
                verify=always, while it runs
    eviction    cache_size is a fraction of the tree
    kills       the daemon is SIGKILLed at 1/6, 2/6 and 3/6 of the run, its dead mount
                lazily unmounted, and efscache mounted again on the same cache_dir
    vandal      our own faults (DESIGN rule 16), until the middle of the last daemon's run:
                arms random rules of the fault shim (tests/faultinj: EMFILE, ENOSPC, EIO,
                ENOENT on the daemon's calls in cache_dir, each with a probability) for a
                second or two at a time; removes, truncates and punches data files and
                removes meta files and whole v1/XX directories underneath; sends `evict` for
                files the mutator is renaming over and deleting, and `verify`

What a read may return.  Every version of every file is written with a pattern that names
it: each 4 KiB page p of version v of file f is the 16 bytes (MAGIC, f, v, p) repeated, so a
page read is attributed by its own first bytes and checked whole.  A version is "held" by
the source from the moment its bytes start to reach SOURCE (first write in place, or the
rename that publishes it) until the change that replaces it is complete (last write of the
next version, the rename over it, the unlink).  NFS semantics (close-to-open, with the
attribute caching efs-emu emulates by default): an open sees at least what the source held
when the open started, and a reader may keep seeing that version, or any later one, until it
closes (an fd opened before a rename over the name reads the old file to the end).  So each
page of a read must belong to a version the source held at some moment between the start of
its open() and the end of the read.  Two races with the source are what reading it
directly returns too, and are allowed: a page read while the mutator rewrote it in place
holds records of two versions (each checked as held), and a read racing a truncation to
size T may see zeros from T on, to the end of the page or large folio the file system
cut (checked against the truncations during the read).  A page that is not a page of its
file at its offset, or whose version was not held then, is a wrong page; the test fails
on any.

Every operation runs under a timeout: readers publish when their current operation started
and the main loop counts one still running at two looks after OP_TIMEOUT as a hang.  At the
end the last daemon's RSS is compared with its value after its warm-up, and its open fds at
rest (the kernel made to forget every inode) with those of the first daemon idle before the
load.

EFSCACHE_SOAK_SECONDS sets the duration (default 180; the sanitizer build in tests/run.sh
uses less), EFSCACHE_SOAK_SEED the random seed."""

import collections
import ctypes
import errno
import mmap
import multiprocessing
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time

DURATION = float(os.environ.get("EFSCACHE_SOAK_SECONDS", "180"))
# the harness watchdog must outlast the soak (set before it is imported)
os.environ.setdefault("EFSCACHE_TEST_TIMEOUT", str(int(DURATION * 2 + 300)))

import cachelib as cl  # noqa: E402
from cachelib import KiB, MiB, h  # noqa: E402

FILES = 36
DIRS = 3
READERS = 6
MIN_SIZE = 64 * KiB          # every version is at least this big: mmap readers stay below
MAX_SIZE = 2 * MiB
PAGE = 4096
MAGIC = 0x4B414F53           # "SOAK"
HDR = struct.Struct("<IIII")
# Epochs: 0 (verify=once, the cache fills), 1 and 2 (verify=always, live corruption),
# then the last daemon (verify=once) for the second half, measured from its middle on.
EPOCH = DURATION / 6.0
KILLS = 3
OP_TIMEOUT = 60.0
CACHE_SIZE = "12M"           # ~1/3 of the tree


def rel_of(fid):
    return os.path.join("d%d" % (fid % DIRS), "f%02d" % fid)


def page_bytes(fid, v, p):
    return HDR.pack(MAGIC, fid, v, p) * (PAGE // HDR.size)


def version_bytes(fid, v, size):
    return b"".join(page_bytes(fid, v, p) for p in range((size + PAGE - 1) // PAGE))[:size]


def mixed_page_versions(fid, p, sl):
    """A page read while a writer rewrote it in place holds records of two versions, cut
    where the copies crossed (as reading the source itself would return): the versions
    of its 16-byte records if each one is a record of page p of this file, else None."""
    if len(sl) % HDR.size:
        return None
    vers = set()
    for magic, f, v, pp in HDR.iter_unpack(sl):
        if magic != MAGIC or f != fid or pp != p:
            return None
        vers.add(v)
    return vers


def zero_tail(fid, p, sl):
    """A page that ends in zeros: the file offset-in-page where they start if the bytes
    before are records of page p of this file (their versions are returned too), else
    None."""
    z = len(sl.rstrip(b"\0"))
    z = (z + HDR.size - 1) // HDR.size * HDR.size
    if z == len(sl):
        return None
    head = mixed_page_versions(fid, p, sl[:z]) if z else set()
    return None if head is None else (z, head)


def check_pages(fid, off, data):
    """(set of versions the pages claim, number of wrong pages, file offsets where zero
    tails start).  off is page-aligned.  Each version must be one the source held during
    the read, so a page mixed from versions is right only while both were held; a page
    that turns to zeros is right only at or past the size a concurrent truncation cut
    the file to (both checked by the caller, which knows the source's history)."""
    vers = set()
    bad = 0
    zeros = []
    for i in range(0, len(data), PAGE):
        sl = data[i:i + PAGE]
        p = (off + i) // PAGE
        if len(sl) < HDR.size:
            bad += 1
            continue
        magic, f, v, pp = HDR.unpack_from(sl)
        if magic == MAGIC and f == fid and pp == p and sl == page_bytes(fid, v, p)[:len(sl)]:
            vers.add(v)
            continue
        mixed = mixed_page_versions(fid, p, sl)
        if mixed is not None:
            vers |= mixed
            continue
        zt = zero_tail(fid, p, sl)
        if zt is None:
            bad += 1
        else:
            zeros.append(off + i + zt[0])
            vers |= zt[1]
    return vers, bad, zeros


def first_bad_page(fid, off, data):
    """Where the first wrong page of a read goes wrong, for the report: its page number,
    the first byte that differs from the page its header names, and the 16 bytes there."""
    for i in range(0, len(data), PAGE):
        sl = data[i:i + PAGE]
        p = (off + i) // PAGE
        if len(sl) < HDR.size:
            return "page %d: %d bytes" % (p, len(sl))
        magic, f, v, pp = HDR.unpack_from(sl)
        want = page_bytes(fid, v, p)[:len(sl)]
        if (magic != MAGIC or f != fid or pp != p or sl != want) and \
                mixed_page_versions(fid, p, sl) is None and zero_tail(fid, p, sl) is None:
            k = next((j for j in range(len(sl)) if sl[j] != want[j]), 0)
            u = k // HDR.size * HDR.size
            return "page %d (header v%d): differs at byte %d of %d: %r" % (
                p, v, k, len(sl), sl[u:u + HDR.size])
    return "no wrong page found"


# ---------------------------------------------------------------------------------------
# readers (separate processes: a read stuck in the kernel cannot stall the test)

def reader_main(idx, mnt, deadline, seed, since, cur, logpath):
    rng = random.Random(seed)
    buf = mmap.mmap(-1, 512 * KiB)
    out = open(logpath, "w")
    while time.monotonic() < deadline:
        fid = rng.randrange(FILES)
        cur[idx] = fid
        path = os.path.join(mnt, rel_of(fid))
        mode = rng.choice(("buffered", "direct", "mmap"))
        since[idx] = time.monotonic()
        t_open = time.monotonic()
        fd = -1
        try:
            fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0))
            size = os.fstat(fd).st_size
            for _ in range(rng.randrange(1, 5)):
                if mode == "mmap":
                    span = min(size, MIN_SIZE)
                    if span <= 0:
                        break
                    with mmap.mmap(fd, span, prot=mmap.PROT_READ) as m:
                        off = rng.randrange(0, span, PAGE)
                        data = m[off:min(span, off + rng.randrange(1, 9) * PAGE)]
                else:
                    off = rng.randrange(0, max(size, PAGE), PAGE)
                    n = rng.randrange(1, 129) * PAGE
                    if mode == "direct":
                        view = memoryview(buf)[:n]
                        got = os.preadv(fd, [view], off)
                        data = bytes(view[:got])
                        view.release()
                    else:
                        data = os.pread(fd, n, off)
                t_end = time.monotonic()
                vers, bad, zeros = check_pages(fid, off, data)
                out.write("R %d %s %.6f %.6f %d %d %s\n" % (
                    fid, mode, t_open, t_end, off, bad,
                    ",".join(str(v) for v in sorted(vers)) or "-"))
                for z in zeros:
                    out.write("Z %d %s %.6f %.6f %d off=%d len=%d size=%d\n" % (
                        fid, mode, t_open, t_end, z, off, len(data), size))
                if bad:
                    out.write("BAD %d %s %.6f %.6f off=%d len=%d size=%d first=%r %s\n" % (
                        fid, mode, t_open, t_end, off, len(data), size, data[:HDR.size],
                        first_bad_page(fid, off, data)))
        except OSError as e:
            out.write("E %d %s %s %.6f\n" % (fid, mode, errno.errorcode.get(e.errno, e.errno),
                                             time.monotonic()))
            time.sleep(0.02)  # a deleted file or a dead mount: do not spin
        finally:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            since[idx] = 0.0
    out.close()


# ---------------------------------------------------------------------------------------
# the source's history

class History:
    """Per file: list of [version, held_from, held_until or None]."""

    def __init__(self):
        self.mu = threading.Lock()
        self.v = collections.defaultdict(list)
        self.next_v = collections.defaultdict(int)
        self.events = collections.defaultdict(list)  # fid -> (t0, t1, op, version, size)

    def event(self, fid, t0, op, v, size):
        with self.mu:
            self.events[fid].append((t0, time.monotonic(), op, v, size))

    def events_between(self, fid, t0, t1):
        with self.mu:
            return [e for e in self.events[fid] if e[1] >= t0 and e[0] <= t1]

    def new_version(self, fid):
        with self.mu:
            self.next_v[fid] += 1
            return self.next_v[fid]

    def begin(self, fid, v, t):
        with self.mu:
            self.v[fid].append([v, t, None])

    def end_others(self, fid, keep, t):
        """Every held version but keep stops being held at t."""
        with self.mu:
            for rec in self.v[fid]:
                if rec[0] != keep and rec[2] is None:
                    rec[2] = t

    def held_between(self, fid, v, t0, t1):
        with self.mu:
            for ver, a, b in self.v[fid]:
                if ver == v and a <= t1 and (b is None or b >= t0):
                    return True
        return False


def write_version(path, data, in_place):
    if in_place:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
    else:
        with open(path, "wb") as f:
            f.write(data)


def rand_size(rng):
    return rng.randrange(MIN_SIZE // 512, MAX_SIZE // 512 + 1) * 512


def mutator(st, hist, rng, stop, counts):
    present = set(range(FILES))
    while not stop.is_set():
        fid = rng.randrange(FILES)
        path = st.s(rel_of(fid))
        op = rng.choice(("rewrite", "rewrite", "truncate", "replace", "replace", "delete"))
        if fid not in present:
            op = "create"
        t_op = time.monotonic()
        try:
            if op in ("rewrite", "create"):
                v = hist.new_version(fid)
                data = version_bytes(fid, v, rand_size(rng))
                hist.begin(fid, v, time.monotonic())
                write_version(path, data, in_place=(op == "rewrite"))
                hist.end_others(fid, v, time.monotonic())
                hist.event(fid, t_op, op, v, len(data))
                present.add(fid)
            elif op == "truncate":
                # a prefix of what is there: no new bytes, the held versions go on
                size = os.stat(path).st_size
                new = max(MIN_SIZE, (size // 2) // 512 * 512)
                if new < size:
                    os.truncate(path, new)
                    hist.event(fid, t_op, op, None, new)
            elif op == "replace":
                v = hist.new_version(fid)
                tmp = path + ".new"
                write_version(tmp, version_bytes(fid, v, rand_size(rng)), in_place=False)
                hist.begin(fid, v, time.monotonic())
                os.rename(tmp, path)
                hist.end_others(fid, v, time.monotonic())
                hist.event(fid, t_op, op, v, os.stat(path).st_size)
            elif op == "delete":
                os.unlink(path)
                hist.end_others(fid, None, time.monotonic())
                hist.event(fid, t_op, op, None, 0)
                present.discard(fid)
            counts[op] += 1
        except OSError as e:
            counts["mutator_errors"] += 1
            h.note("mutator: %s of %s: %s" % (op, path, e))
        stop.wait(rng.uniform(0.05, 0.4))


def flip_random(rng, cache_dir, kinds):
    """XOR one byte of a random cache file of the given kinds ('.data', '.meta')."""
    files = [p for m, d in cl.records(cache_dir) for p in (m, d) if p.endswith(kinds)]
    rng.shuffle(files)
    for p in files:
        try:
            size = os.stat(p).st_size
            if size <= 0:
                continue
            cl.flip_byte(p, rng.randrange(size))
            return True
        except (OSError, ValueError):
            continue
    return False


def corrupter(st, rng, stop, live, counts):
    while not stop.is_set():
        stop.wait(rng.uniform(0.2, 0.8))
        if live.is_set() and flip_random(rng, st.cache_dir, (".data",)):
            counts["corruptions_live"] += 1


# The vandal's menu of shim rules ("OP ERRNO [kind=K]"; a probability and a seed are added).
FAULT_RULES = ("open EMFILE", "open EMFILE kind=data", "open EMFILE kind=meta",
               "open ENOENT kind=meta", "write ENOSPC", "fallocate ENOSPC", "truncate ENOSPC",
               "read EIO kind=data", "write EIO kind=data", "read EIO kind=meta", "sync EIO",
               "rename EIO", "unlink EIO", "statvfs EIO")
DAMAGE = ("rm_data", "rm_meta", "trunc_data", "punch_data", "rm_subdir")
ADMIN = ("evict", "evict", "verify")
_libc = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def punch(path, off, length):
    fd = os.open(path, os.O_WRONLY)
    try:
        if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                           ctypes.c_long(off), ctypes.c_long(length)) < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)


def damage(rng, cache_dir, what):
    """One record's file damaged underneath, as a cleaner of cache_dir would; True if done."""
    recs = cl.records(cache_dir)
    rng.shuffle(recs)
    for meta, data in recs:
        try:
            if what == "rm_subdir":
                shutil.rmtree(os.path.dirname(meta))  # v1/XX, as rm -rf would
            elif what == "rm_meta":
                os.unlink(meta)
            elif what == "rm_data":
                os.unlink(data)
            else:
                size = os.stat(data).st_size
                if size <= 0:
                    continue
                if what == "trunc_data":
                    os.truncate(data, rng.randrange(size))
                else:
                    off = rng.randrange(size) & ~(PAGE - 1)
                    punch(data, off, rng.randrange(1, 65) * PAGE)
            return True
        except OSError:
            continue
    return False


def admin(rng, st, what):
    """An admin command through the control socket; True if the daemon answered."""
    try:
        if what == "verify":
            cl.ctl_request(st.cache_dir, "verify", timeout=120)
        else:
            ino = os.stat(st.p(rel_of(rng.randrange(FILES)))).st_ino
            cl.ctl_request(st.cache_dir, "evict ino=%d" % ino, timeout=30)
        return True
    except (OSError, ConnectionError, ValueError):
        return False  # the file is gone, the daemon is down (a kill)


class Vandal:
    """Our own faults while `live`: shim rules armed a while at a time, cache files damaged
    underneath, admin commands racing the mutator.  stop_faults() disarms for good."""

    def __init__(self, st, rng, stop, counts):
        self.st, self.rng, self.stop, self.counts = st, rng, stop, counts
        self.lock = threading.Lock()
        self.live = True
        self.down = False  # a daemon killed and not yet mounted again
        self.fired = 0  # the shim's "first failure" lines of the daemons killed so far

    def arm(self, rules):
        with self.lock:
            if not self.live or (rules and self.down):
                return False
            cl.faultinj_set(self.st, rules, settle=False)
            return True

    def pause(self):
        """Before a kill: no rule meets the next daemon's start (an EMFILE there is a
        refusal to start, exit 2, which is not what is tested here)."""
        with self.lock:
            self.down = True
            cl.faultinj_set(self.st, "", settle=False)

    def resume(self):
        with self.lock:
            self.down = False

    def stop_faults(self):
        with self.lock:
            self.live = False
            cl.faultinj_set(self.st, "", settle=False)

    def before_kill(self):
        self.fired += cl.faultinj_failed(self.st)

    def run(self):
        rng, counts = self.rng, self.counts
        while not self.stop.is_set() and self.live:
            rules = "\n".join("%s p=%.2f seed=%d" % (rng.choice(FAULT_RULES),
                                                     rng.uniform(0.05, 0.5), rng.randrange(1000))
                               for _ in range(rng.randrange(1, 3)))
            if self.arm(rules):
                counts["fault_rule_sets"] += 1
            self.stop.wait(rng.uniform(0.5, 2.0))
            self.arm("")
            for _ in range(rng.randrange(1, 4)):
                what = rng.choice(DAMAGE + ADMIN)
                if what in DAMAGE:
                    if self.live and damage(rng, self.st.cache_dir, what):
                        counts[what] += 1
                elif self.live and admin(rng, self.st, what):
                    counts[what] += 1
                self.stop.wait(rng.uniform(0.1, 0.5))
            self.stop.wait(rng.uniform(0.2, 1.0))


def daemon_fds_rss(pid):
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/status" % pid) as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return fds, rss
    except (OSError, StopIteration):
        return None, None


SUMMED = ("reads", "hits", "misses", "checksum_mismatches", "chunks_verified", "stale_dropped",
          "evictions", "source_errors", "fallbacks", "records_gone", "cache_io_errors",
          "cache_enospc")


def add_daemon_stats(acc, st):
    try:
        s = st.stats(settled=False)
    except OSError:
        return
    for k in SUMMED:
        if isinstance(s.get(k), int):
            acc[k] += s[k]


def kstack(pid):
    try:
        with open("/proc/%d/stack" % pid) as f:
            return " | ".join(line.split()[1] for line in f if line.strip())
    except (OSError, IndexError):
        return "?"


def daemon_wchans(st):
    pid = st.daemon_pid()
    if not pid:
        return "no daemon"
    res = collections.Counter()
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/wchan" % (pid, t)) as f:
                res[f.read().strip()] += 1
        except OSError:
            pass
    return dict(res)


def kill_and_lazy_unmount(st):
    pid = st.daemon_pid()
    if pid:
        os.kill(pid, signal.SIGKILL)
    try:
        st.m.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    cl.run(["fusermount3", "-u", "-z", st.mnt])
    st.m.umount()  # bookkeeping: nothing left to stop
    st.m = None


# FUSE worker threads (max_threads, 16 by default, all kept when idle) each hold a clone of
# /dev/fuse and a splice pipe: fds that follow the peak of concurrent requests, not a leak
FUSE_THREAD_FDS = 16 * 3 + 1


def fd_classes(pid):
    """pid's open fds as (FUSE worker fds, other fds, what they lead to: a summary)."""
    c = collections.Counter()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            c[re.sub(r"[0-9a-f]{8,}|[0-9]+", "N", os.readlink("/proc/%d/fd/%s" % (pid, fd)))] += 1
        except OSError:
            pass
    fuse = c["/dev/fuse"] + c["pipe:[N]"]
    return fuse, sum(c.values()) - fuse, ", ".join("%s x%d" % kv for kv in c.most_common())


def quiesced_fds(st, others_at_most=None):
    """fd_classes of the daemon once the kernel has forgotten every inode but the root
    (dentries and inodes dropped until it knows no other inode and holds no source fd for
    one, for up to 30 s); None if that never happened.  With others_at_most, work still
    running for a forgotten file (a prefetch, a write behind) gets up to 10 s more to
    finish and give back its record's fds; fds held longer are counted."""
    deadline = time.monotonic() + 30
    while True:
        s = st.stats()
        if not s.get("inode_fds") and not s.get("inodes"):
            settle = time.monotonic() + 10
            fds = fd_classes(st.daemon_pid())
            while (others_at_most is not None and fds[1] > others_at_most and
                   time.monotonic() < settle):
                time.sleep(0.2)
                fds = fd_classes(st.daemon_pid())
            return fds
        if time.monotonic() > deadline:
            h.note("the daemon still knows inodes after 30 s of dropping the kernel's: "
                   "inodes %s, inode_fds %s" % (s.get("inodes"), s.get("inode_fds")))
            return None
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        time.sleep(0.2)


def test_soak():
    seed = int(os.environ.get("EFSCACHE_SOAK_SEED", "0")) or random.randrange(1 << 30)
    h.note("soak: %.0f s, seed %d (EFSCACHE_SOAK_SEED to repeat)" % (DURATION, seed))
    rng = random.Random(seed)
    # 1 s name windows (efscache and the emulated NFS client): a deleted and re-created
    # file is seen again soon, as names are on NFS after acdirmin
    st = cl.Stack(cache_opts=("cache_size=" + CACHE_SIZE,) + cl.SHORT_DIR_WINDOW,
                  emu_opts=cl.EMU_SHORT_DIR, chunk_size="64K", cache_env=cl.faultinj_env)
    hist = History()
    for d in range(DIRS):
        os.makedirs(st.s("d%d" % d), exist_ok=True)
    for fid in range(FILES):
        v = hist.new_version(fid)
        hist.begin(fid, v, time.monotonic())
        write_version(st.s(rel_of(fid)), version_bytes(fid, v, rand_size(rng)), False)

    counts = collections.Counter()
    daemon_counts = collections.Counter()  # efscache's counters, summed over the daemons
    stop = threading.Event()
    live = threading.Event()   # live corruption allowed (verify=always epochs)
    start = time.monotonic()
    deadline = start + DURATION
    logdir = h.tmpdir("efscache-soak-logs-")
    ctx = multiprocessing.get_context("fork")
    since = ctx.Array("d", READERS, lock=False)
    cur = ctx.Array("i", READERS, lock=False)  # the file each reader works on
    logs = []
    procs = [None] * READERS

    def spawn(i):
        path = os.path.join(logdir, "r%d.%d" % (i, len(logs)))
        logs.append(path)
        p = ctx.Process(target=reader_main, args=(i, st.mnt, deadline, rng.randrange(1 << 30),
                                                  since, cur, path))
        p.start()
        procs[i] = p

    # fds of an idle daemon that knows no inode but the root: what the last one must come
    # back to once the load is over and the kernel has forgotten its inodes
    idle = quiesced_fds(st)
    for i in range(READERS):
        spawn(i)
    down = []  # [killed at, mounted again at] of each kill
    threads = [threading.Thread(target=mutator, args=(st, hist, random.Random(rng.random()),
                                                      stop, counts)),
               threading.Thread(target=corrupter, args=(st, random.Random(rng.random()), stop,
                                                        live, counts))]
    vandal = Vandal(st, random.Random(rng.random()), stop, counts)
    threads.append(threading.Thread(target=vandal.run))
    for t in threads:
        t.start()

    hangs = 0
    suspect = [0.0] * READERS  # the start of an operation seen over OP_TIMEOUT once
    epoch = 0
    warm = None
    series = []  # (time, fds, rss) of the last daemon after its warm-up
    final_start = start + KILLS * EPOCH
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = time.monotonic()
            for i in range(READERS):
                p = procs[i]
                if p.exitcode is not None and now < deadline - 1:
                    # an mmap read whose page the daemon could not supply gets SIGBUS:
                    # expected while the daemon is down, a failure otherwise
                    t0 = since[i] or now
                    in_kill = any(a <= now + 1 and (b is None or b >= t0 - 1)
                                  for a, b in down)
                    # or the file was deleted or replaced on the source during the open,
                    # and a chunk evicted since had to be fetched: the source no longer
                    # opens the old file (NFS: ESTALE; a read(2) reader gets that errno)
                    gone = any(ev[2] in ("replace", "delete")
                               for ev in hist.events_between(cur[i], t0 - 1, now))
                    key = "SIGBUS" if p.exitcode == -signal.SIGBUS else "exit %s" % p.exitcode
                    counts["reader " + key + (" (daemon down)" if in_kill else
                                              " (file gone on the source)" if gone and
                                              key == "SIGBUS" else "")] += 1
                    since[i] = 0.0
                    spawn(i)
                    continue
                began = since[i]
                if not began or now - began <= OP_TIMEOUT:
                    suspect[i] = 0.0
                elif suspect[i] != began:
                    # Seen over the bound once: a hang only if the same operation is still
                    # running at the next look.  A pause of the whole machine (this is a
                    # VM; twice a reader was "hung for -0 s": it finished the instant the
                    # loop saw it) makes every operation under way look old at once.
                    suspect[i] = began
                else:
                    hangs += 1
                    h.note("reader %d: an operation has run for %.0f s; its stack: %s; "
                           "daemon threads: %s" % (i, now - began, kstack(p.pid),
                                                   daemon_wchans(st)))
                    suspect[i] = 0.0
                    since[i] = 0.0
            final = counts["kills"] >= KILLS
            if final and now > (final_start + deadline) / 2:
                if vandal.live:
                    vandal.stop_faults()  # the last daemon is measured from here on
                sample = daemon_fds_rss(st.daemon_pid())
                if warm is None:
                    warm = sample
                if sample[0] is not None and (not series or now - series[-1][0] >= 5):
                    series.append((now, sample[0], sample[1]))
            if final or now < start + (counts["kills"] + 1) * EPOCH:
                continue
            # kill, corrupt what the dead daemon left, remount (epochs 1 and 2 with
            # verify=always and live corruption)
            live.clear()
            add_daemon_stats(daemon_counts, st)
            vandal.before_kill()
            vandal.pause()
            down.append([time.monotonic(), None])
            kill_and_lazy_unmount(st)
            counts["kills"] += 1
            for _ in range(rng.randrange(1, 6)):
                if flip_random(rng, st.cache_dir, (".data", ".meta")):
                    counts["corruptions_down"] += 1
            epoch += 1
            always = epoch < KILLS
            st.mount(["verify=always"] if always else None)
            vandal.resume()
            down[-1][1] = time.monotonic()
            if always:
                live.set()
            if epoch == KILLS:
                final_start = time.monotonic()
    finally:
        stop.set()
        live.clear()
        vandal.stop_faults()
        for t in threads:
            t.join(60)
        for p in procs:
            p.join(OP_TIMEOUT)
            if p.is_alive():
                hangs += 1
                h.note("reader pid %d did not finish: killed" % p.pid)
                p.kill()
                p.join(10)

    # the final daemon: fds and RSS after the load against after its warm-up
    end = daemon_fds_rss(st.daemon_pid())
    st.stats()  # write-behind settled
    quiet = quiesced_fds(st, idle and idle[1])

    reads = wrong = not_held = zero_cut = 0
    modes = collections.Counter()
    errs = collections.Counter()
    samples = []
    nbad = 0
    for path in logs:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts[0] == "R":
                    fid, mode, t0, t1, off, bad, vers = parts[1:8]
                    fid, t0, t1, bad = int(fid), float(t0), float(t1), int(bad)
                    reads += 1
                    modes[mode] += 1
                    wrong += bad
                    for v in ([] if vers == "-" else vers.split(",")):
                        if not hist.held_between(fid, int(v), t0, t1):
                            not_held += 1
                            if len(samples) < 5:
                                samples.append("file %d version %s read in [%.3f, %.3f]: "
                                               "held %s" % (fid, v, t0, t1, hist.v[fid]))
                elif parts[0] == "BAD" and nbad < 3:
                    nbad += 1
                    samples.append(line.strip())
                    # what the source went through around the bad read, and the kills
                    bfid, bt0, bt1 = int(parts[1]), float(parts[3]), float(parts[4])
                    for ev in hist.events_between(bfid, bt0 - 3, bt1 + 0.5):
                        samples.append("    source: [%.6f, %.6f] %s v%s size %d" % ev)
                    for d0, d1 in down:
                        if d1 is None or (d1 >= bt0 - 3 and d0 <= bt1):
                            samples.append("    daemon down [%.6f, %s]" % (d0, d1))
                elif parts[0] == "Z":
                    # Zeros from offset z on: what a read racing a truncation to a size
                    # <= z may see (the file system zeroes the cut end of the page, or of
                    # the large folio, it truncates).  Anything else is a wrong page.
                    zfid, zt0, zt1, z = int(parts[1]), float(parts[3]), float(parts[4]), \
                        int(parts[5])
                    cuts = [ev for ev in hist.events_between(zfid, zt0, zt1)
                            if ev[2] in ("truncate", "rewrite") and ev[4] <= z]
                    if cuts:
                        zero_cut += 1
                    else:
                        wrong += 1
                        if nbad < 3:
                            nbad += 1
                            samples.append("ZEROS " + line.strip())
                            for ev in hist.events_between(zfid, zt0 - 3, zt1 + 0.5):
                                samples.append("    source: [%.6f, %.6f] %s v%s size %d" % ev)
                elif parts[0] == "E":
                    errs[parts[3]] += 1
    add_daemon_stats(daemon_counts, st)
    vandal.before_kill()
    s = daemon_counts
    h.note("soak counts: reads checked %d (%s), source mutations %d (%s), corruptions "
           "injected %d (%d while down, %d live), kills %d, wrong pages %d, pages of a "
           "version not held %d, hangs %d, pages zeroed past a concurrent truncation %d" % (
               reads, ", ".join("%s %d" % kv for kv in sorted(modes.items())),
               sum(counts[k] for k in ("rewrite", "truncate", "replace", "delete", "create")),
               ", ".join("%s %d" % (k, counts[k]) for k in ("rewrite", "truncate", "replace",
                                                            "delete", "create")),
               counts["corruptions_down"] + counts["corruptions_live"],
               counts["corruptions_down"], counts["corruptions_live"], counts["kills"],
               wrong, not_held, hangs, zero_cut))
    h.note("reader errors: %s; reader processes that died: %s" % (
        dict(errs) or "none", {k: v for k, v in counts.items() if k.startswith("reader ")}
        or "none"))
    h.note("our own faults: %d rule sets armed (%d rules fired), %s" % (
        counts["fault_rule_sets"], vandal.fired,
        ", ".join("%s %d" % (k, counts[k]) for k in DAMAGE + ("evict", "verify"))))
    h.note("efscache, all daemons: %s" % ", ".join("%s %d" % (k, s[k]) for k in SUMMED))
    for x in samples[:60]:
        h.note("  " + x)
    h.check("reads were checked", reads > 100 and all(modes[m] for m in
                                                      ("buffered", "direct", "mmap")),
            str(modes))
    h.check("the source changed under the readers", counts["replace"] and counts["rewrite"]
            and counts["delete"])
    h.check("corruptions were injected", counts["corruptions_down"] > 0)
    h.check("our own faults were injected: shim rules fired, files damaged underneath, "
            "admin commands answered", vandal.fired > 0 and all(counts[k] for k in DAMAGE) and
            counts["evict"] > 0, "fired %d, %s" % (vandal.fired, dict(counts)))
    h.eq("the daemon was killed and remounted", counts["kills"], KILLS)
    h.eq("wrong pages", wrong, 0)
    h.eq("pages of a version the source did not hold during the open", not_held, 0)
    h.eq("hangs", hangs, 0)
    h.eq("mutator errors", counts["mutator_errors"], 0)
    # errors a reader may see: the daemon killed under it (ENOTCONN, ECONNABORTED), a name
    # deleted or replaced on the source (ENOENT, ESTALE)
    odd = {k: v for k, v in errs.items() if k not in ("ENOTCONN", "ECONNABORTED", "ENOENT",
                                                       "ESTALE")}
    h.check("readers saw no other errors", not odd, str(odd))
    died = {k: v for k, v in counts.items()
            if k.startswith("reader ") and not k.endswith(("(daemon down)",
                                                           "(file gone on the source)"))}
    h.check("no reader died while the daemon was up", not died, str(died))
    if warm and warm[0] is not None and end[0] is not None:
        h.note("last daemon: fds %d -> %d, RSS %.1f -> %.1f MiB (after warm-up -> end); "
               "every 5 s: fds %s, RSS MiB %s" % (
                   warm[0], end[0], warm[1] / MiB, end[1] / MiB,
                   " ".join(str(x[1]) for x in series),
                   " ".join("%.0f" % (x[2] / MiB) for x in series)))
        # Under load the count follows the files in use (their source and cache fds), so
        # what is compared is the daemon at rest, when every fd it holds is accounted for.
        if idle and quiet:
            h.note("fds at rest (no inode but the root known, nothing open): first daemon "
                   "idle %d + %d of FUSE workers, last daemon after the load %d + %d; the "
                   "latter: %s" % (idle[1], idle[0], quiet[1], quiet[0], quiet[2]))
        h.check("fds flat: at rest after the load no more than idle at the start, FUSE "
                "workers' aside", idle and quiet and quiet[1] <= idle[1],
                "%s -> %s" % (idle and idle[1], quiet and quiet[1]))
        h.check("FUSE workers' fds within max_threads' bound",
                quiet and quiet[0] <= FUSE_THREAD_FDS,
                "%s > %d" % (quiet and quiet[0], FUSE_THREAD_FDS))
        if h.sanitizer_of(st.daemon_pid()) == "asan":
            h.note("ASan build: RSS includes its quarantine (up to 256 MiB), not checked")
        else:
            h.check("RSS flat", end[1] <= warm[1] * 1.25 + 16 * MiB,
                    "%d -> %d" % (warm[1], end[1]))
    else:
        h.check("fds and RSS of the last daemon measured", False, "%r %r" % (warm, end))
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_soak])
