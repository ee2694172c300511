#!/usr/bin/env python3
"""A vanished cache_dir never fails a read: `rm -rf` of cache_dir while mounted (also in
the middle of a read); reads of cached and uncached files return the right bytes; the
daemon recreates cache_dir (0700, its lock taken again, so a second daemon is still
refused), counts cache_dir_recreated and caches again.  A cache_dir replaced by a symlink
while mounted is not written through."""

import os
import shutil
import stat
import subprocess
import threading
import time

import cachelib as cl
from cachelib import MiB, h


def recreated(st):
    try:
        s = os.lstat(st.cache_dir)
    except OSError:
        return False
    return stat.S_ISDIR(s.st_mode) and st.stats().get("cache_dir_recreated", 0) >= 1


def test_cache_dir_removed():
    st = cl.Stack()
    want = {}
    for i, n in enumerate(("a", "b", "c", "big")):
        want[n] = cl.make_file(st.s(n), (24 if n == "big" else 3) * MiB + i, seed=i + 1)
    cl.check_content("a cached", st.p("a"), st.s("a"), want["a"])
    fd_a = os.open(st.p("a"), os.O_RDONLY)  # an open file whose record vanishes

    shutil.rmtree(st.cache_dir)
    h.check("setup: cache_dir removed", not os.path.exists(st.cache_dir))
    cl.drop_caches()
    cl.check_content("after rm -rf: cached file a", st.p("a"), st.s("a"), want["a"])
    cl.check_content("after rm -rf: uncached file b", st.p("b"), st.s("b"), want["b"])
    data = os.pread(fd_a, 3 * MiB + 10, 0)
    h.eq("after rm -rf: read through an fd opened before", cl.sha(data), want["a"])
    os.close(fd_a)

    ok = cl.wait_for(lambda: recreated(st), timeout=60, step=0.1)
    h.check("cache_dir recreated and counted", ok,
            "exists: %s, stats: %s" % (os.path.exists(st.cache_dir), st.stats()))
    if os.path.isdir(st.cache_dir):
        mode = stat.S_IMODE(os.lstat(st.cache_dir).st_mode)
        h.eq("recreated cache_dir mode", oct(mode), oct(0o700))
        h.eq("recreated cache_dir owner", os.lstat(st.cache_dir).st_uid, os.getuid())

    # caching works again
    cl.drop_caches()
    s0 = st.stats()
    cl.check_content("after recreation: c", st.p("c"), st.s("c"), want["c"])
    cl.check_content("after recreation: a", st.p("a"), st.s("a"), want["a"])
    s1 = st.stats()
    h.check("after recreation: chunks stored again", cl.delta(s1, s0, "chunks_stored") > 0,
            str(s1))
    cl.drop_caches()
    e0 = st.emu_stats()
    cl.check_content("after recreation: c from the cache", st.p("c"), st.s("c"), want["c"])
    cl.check_content("after recreation: a from the cache", st.p("a"), st.s("a"), want["a"])
    h.eq("after recreation: 0 bytes fetched from the emu",
         cl.delta(st.emu_stats(), e0, "read_bytes"), 0)
    for n in ("a", "c"):
        mode = None
        rec = st.record_of(n)
        if h.check("record of %s in the new cache_dir" % n, rec is not None):
            mode = stat.S_IMODE(os.stat(rec[0]).st_mode)
            h.eq("record of %s: mode" % n, oct(mode), oct(0o600))

    # the lock is held in the new cache_dir: a second daemon is refused
    other_mnt = os.path.join(st.base, "mnt2")
    os.makedirs(other_mnt)
    r = subprocess.run([h.EFSCACHE_BIN, st.emu, other_mnt, "-o", "cache_dir=" + st.cache_dir],
                       capture_output=True, text=True, timeout=30)
    mounted = h.is_mounted(other_mnt)
    if mounted:
        subprocess.run(["fusermount3", "-u", other_mnt], capture_output=True)
        for p in h.find_daemon_pids(h.EFSCACHE_BIN, other_mnt):
            os.kill(p, 9)
    h.check("after recreation: a second daemon on cache_dir is refused",
            r.returncode != 0 and not mounted,
            "exit %d, mounted %s, stderr %r" % (r.returncode, mounted, r.stderr.strip()))

    # rm -rf in the middle of a large read (several times)
    for rnd in range(3):
        st.evict("big")
        cl.drop_caches()
        res = {}

        def reader():
            try:
                res["h"] = cl.hash_file(st.p("big"))
            except OSError as e:
                res["h"] = repr(e)
        t = threading.Thread(target=reader)
        t.start()
        cl.wait_for(lambda: st.status("big").get("cached_bytes", 0) >= (rnd + 1) * 4 * MiB
                    or not t.is_alive(), timeout=60, step=0.005)
        shutil.rmtree(st.cache_dir, ignore_errors=True)
        t.join()
        h.eq("rm -rf during a read, round %d: bytes" % rnd, res.get("h"), want["big"])
        h.check("round %d: recreated" % rnd,
                cl.wait_for(lambda: os.path.isdir(st.cache_dir), timeout=60, step=0.1))
        cl.drop_caches()
        cl.check_content("rm -rf during a read, round %d: read again" % rnd, st.p("big"),
                         st.s("big"), want["big"])

    # replaced by a symlink to another directory: nothing may be written there
    decoy = os.path.join(st.base, "decoy")
    os.makedirs(decoy, mode=0o700)
    cl.wait_for(lambda: os.path.isdir(st.cache_dir), timeout=60, step=0.1)
    # the daemon may be writing into (or recreating) cache_dir while it goes: remove
    # it until the symlink can take its place
    for _ in range(100):
        shutil.rmtree(st.cache_dir, ignore_errors=True)
        try:
            os.symlink(decoy, st.cache_dir)
            break
        except FileExistsError:
            time.sleep(0.05)
    h.check("cache_dir replaced by a symlink", os.path.islink(st.cache_dir))
    cl.drop_caches()
    for n in ("a", "b", "c"):
        cl.check_content("cache_dir replaced by a symlink: %s" % n, st.p(n), st.s(n), want[n])
    # give the daemon's periodic check time to look at it (waits for an event that must
    # not happen; the bound only limits the test's run time)
    cl.wait_for(lambda: os.listdir(decoy), timeout=3, step=0.1)
    for n in ("a", "b", "c"):
        cl.check_content("cache_dir replaced by a symlink, later: %s" % n, st.p(n), st.s(n),
                         want[n])
    h.eq("nothing written through the symlink", sorted(os.listdir(decoy)), [])
    h.check("the symlink was left alone or replaced by a real directory",
            os.path.islink(st.cache_dir) or os.path.isdir(st.cache_dir))
    if os.path.islink(st.cache_dir):
        os.unlink(st.cache_dir)
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_cache_dir_removed])
