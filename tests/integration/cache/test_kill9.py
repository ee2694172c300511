#!/usr/bin/env python3
"""Survives crashes: `kill -9` of the daemon at a random moment while it fills the cache
(a cold sequential read of a 32 MiB file, sometimes with a second reader at a random
offset), then `fusermount3 -uz`, then a remount with the same cache_dir: reading the
file must return exactly the source's bytes, every time (20 rounds).  The moment of the
kill is chosen as a random amount of data written to the record's .data file, so it
falls inside the fill without any timing assumption.  Every 4th round the daemon started
after the kill runs with verify=never, so what the killed one left must be right as is."""

import os
import random
import signal
import subprocess
import time

import cachelib as cl
from cachelib import MiB, h

ROUNDS = 20
SIZE = 32 * MiB


def data_bytes(st, name):
    rec = st.record_of(name)
    if not rec:
        return 0
    try:
        return os.stat(rec[1]).st_blocks * 512
    except OSError:
        return 0


def crash(st):
    """SIGKILL the daemon, reap it, lazily unmount the dead mount."""
    pid = st.daemon_pid()
    if pid:
        os.kill(pid, signal.SIGKILL)
    m = st.m
    try:
        m.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    r = cl.run(["fusermount3", "-u", "-z", st.mnt])
    h.check("fusermount3 -uz after kill -9", r.returncode == 0 and not h.is_mounted(st.mnt),
            r.stderr)
    m.umount()  # bookkeeping only: nothing left to unmount or stop
    st.m = None


def test_kill9():
    # a bandwidth cap makes the fill take a little while (~0.5 s), so the kill lands in it
    st = cl.Stack(emu_opts=cl.EMU_FAST[:2] + ("bw_mib=64", "timeout=0"))
    rng = random.Random(int(os.environ.get("EFSCACHE_TEST_SEED", "0")) or None)
    seed = rng.randrange(1 << 30)
    h.note("random seed %d (set EFSCACHE_TEST_SEED to repeat)" % seed)
    rng.seed(seed)
    want = {n: cl.make_file(st.s(n), SIZE, seed=i + 1) for i, n in enumerate(("a", "b"))}
    bad_rounds = []
    for rnd in range(ROUNDS):
        name = "ab"[rnd % 2]
        if rnd % 6 == 5:
            # new identity in the source: the next open resets the record, then the fill
            with open(st.s(name), "r+b") as f:
                f.seek(rng.randrange(SIZE))
                f.write(os.urandom(16))
            want[name] = cl.hash_file(st.s(name))
        st.emu_set("bw_mib", "64")  # slow fill
        cl.drop_caches()
        lock = os.path.join(st.cache_dir, "lock")
        try:
            with open(lock) as f:
                lock_pid = f.read().strip()
        except OSError:
            lock_pid = "?"
        pid = st.daemon_pid()
        target = rng.randrange(0, SIZE - 2 * MiB)
        start = data_bytes(st, name)
        readers = [subprocess.Popen(["dd", "if=" + st.p(name), "of=/dev/null", "bs=1M"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        if rnd % 3 == 1:
            skip = rng.randrange(32)
            readers.append(subprocess.Popen(
                ["dd", "if=" + st.p(name), "of=/dev/null", "bs=1M", "skip=%d" % skip],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # wait until the .data file holds `target` more bytes (or the readers are done)
        cl.wait_for(lambda: data_bytes(st, name) - start >= target
                    or all(p.poll() is not None for p in readers), timeout=120, step=0.002)
        at = data_bytes(st, name) - start
        finished = all(p.poll() is not None for p in readers)
        crash(st)
        for p in readers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                h.check("round %d: reader ended after the kill" % rnd, False, "dd hung")
        h.note("round %d: %s, killed pid %s (lock file says %s) after %d of %d bytes written "
               "to the cache%s" % (rnd, name, pid, lock_pid, at, SIZE,
                                   " (readers had finished)" if finished else ""))
        st.emu_set("bw_mib", "0")  # fast checks
        # every 4th round the new daemon trusts the cache blindly (verify=never): what a
        # killed daemon left behind must be right even then (data before slot)
        st.mount(["verify=never"] if rnd % 4 == 3 else None)
        cl.drop_caches()
        ok = cl.check_content("round %d: after kill -9 and remount, %s equals the source"
                              % (rnd, name), st.p(name), st.s(name), want[name])
        if rnd % 3 == 2:
            # the other file (evicted, so read through the new daemon's fill) and a re-read
            other = "ba"[rnd % 2]
            ok = cl.check_content("round %d: %s equals the source" % (rnd, other),
                                  st.p(other), st.s(other), want[other]) and ok
            cl.drop_caches()
            ok = cl.check_content("round %d: %s again, from the cache" % (rnd, name),
                                  st.p(name), st.s(name), want[name]) and ok
        if not ok:
            bad_rounds.append(rnd)
        # cold again for the next rounds (the checks above filled the cache)
        st.evict("a")
        st.evict("b")
    h.check("every round returned the source's bytes", not bad_rounds,
            "bad rounds: %s (seed %d)" % (bad_rounds, seed))
    s = st.stats()
    h.note("last daemon: %s" % {k: s[k] for k in ("checksum_mismatches", "chunks_verified",
                                                   "chunks_stored")})
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_kill9])
