#!/usr/bin/env python3
"""One fetch per chunk, right bytes under concurrency: fio writes a file with its verify
pattern (crc32c headers in every block) straight into SOURCE, then 8 fio jobs read and
verify it through the mount at once from a cold cache (random and sequential, buffered
and O_DIRECT with a queue depth); 8 Python threads read overlapping random ranges of a
cold file and compare them with SOURCE, while efs-emu's counters show that the source
served each chunk about once (<= file size + one chunk per thread); 8 `dd` processes read
one cold file at once."""

import os
import random
import subprocess
import threading

import cachelib as cl
from cachelib import KiB, MiB, h

CS = 256 * KiB
THREADS = 8


def fio(args, cwd, timeout=240):
    # cwd: fio leaves verify state files (*-verify.state) in its working directory
    r = subprocess.run(["fio", "--output-format=normal"] + args, capture_output=True,
                       text=True, timeout=timeout, cwd=cwd)
    bad = [ln for ln in (r.stdout + r.stderr).splitlines()
           if "verify failed" in ln or "bad magic" in ln or "err=" in ln and "err= 0" not in ln]
    return r.returncode, bad, r.stdout + r.stderr


def test_fio_verify():
    if not cl.run(["sh", "-c", "command -v fio"]).stdout.strip():
        h.skip("fio verify", "fio is not installed")
        return
    st = cl.Stack()
    size = 48 * MiB
    rc, bad, out = fio(["--name=write", "--filename=" + st.s("fio.dat"), "--rw=write",
                        "--bs=64k", "--size=%d" % size, "--verify=crc32c", "--do_verify=0"],
                        cwd=st.base)
    if not h.check("fio wrote the pattern into SOURCE", rc == 0 and not bad, out[-2000:]):
        return
    want = cl.hash_file(st.s("fio.dat"))
    jobs = [
        ("randread, 8 jobs, buffered", ["--rw=randread", "--bs=64k"]),
        ("sequential read, 8 jobs, buffered", ["--rw=read", "--bs=64k"]),
        ("randread, 8 jobs, O_DIRECT libaio iodepth 16",
         ["--rw=randread", "--bs=64k", "--direct=1", "--ioengine=libaio", "--iodepth=16"]),
        ("randread, 8 jobs, mmap",
         ["--rw=randread", "--bs=64k", "--ioengine=mmap"]),
    ]
    for label, extra in jobs:
        st.evict("fio.dat")
        cl.drop_caches()
        e0 = st.emu_file_stats("fio.dat")
        s0 = st.stats()
        rc, bad, out = fio(["--name=verify", "--filename=" + st.p("fio.dat"), "--readonly",
                            "--size=%d" % size, "--verify=crc32c", "--numjobs=%d" % THREADS,
                            "--group_reporting"] + extra, cwd=st.base)
        h.check("fio %s: no verify errors" % label, rc == 0 and not bad,
                "exit %d; %s\n%s" % (rc, bad[:5], out[-1500:]))
        fetched = st.emu_file_stats("fio.dat")["read_bytes"] - e0.get("read_bytes", 0)
        s1 = st.stats()
        h.check("fio %s: source read about once (emu bytes <= size + %d chunks)"
                % (label, THREADS), fetched <= size + THREADS * CS,
                "emu served %d bytes for a %d-byte file" % (fetched, size))
        h.check("fio %s: efscache bytes_from_source <= size + %d chunks" % (label, THREADS),
                cl.delta(s1, s0, "bytes_from_source") <= size + THREADS * CS,
                "bytes_from_source grew by %d" % cl.delta(s1, s0, "bytes_from_source"))
        h.note("fio %s: fetch_waits %d, misses %d, emu read %d" % (
            label, cl.delta(s1, s0, "fetch_waits"), cl.delta(s1, s0, "misses"), fetched))
    cl.check_content("fio file: bytes equal the source", st.p("fio.dat"), st.s("fio.dat"), want)
    st.check_umount("clean unmount")


def test_threads():
    st = cl.Stack()
    size = 32 * MiB + 777
    cl.make_file(st.s("f"), size, seed=7)
    with open(st.s("f"), "rb") as f:
        ref = f.read()
    seed = random.randrange(1 << 30)
    h.note("random seed %d" % seed)
    for rnd in range(3):
        st.evict("f")
        cl.drop_caches()
        e0 = st.emu_file_stats("f")
        s0 = st.stats()
        barrier = threading.Barrier(THREADS)
        errors = []

        def worker(tid):
            rng = random.Random(seed + rnd * 100 + tid)
            fd = os.open(st.p("f"), os.O_RDONLY)
            try:
                barrier.wait()
                # everyone starts on the same chunks
                ranges = [(0, 3 * CS + 5)]
                for _ in range(40):
                    off = rng.randrange(size)
                    ranges.append((off, rng.randrange(1, 3 * CS)))
                # then the whole file in order from a random start
                start = rng.randrange(0, size, CS)
                for off in list(range(start, size, MiB)) + list(range(0, start, MiB)):
                    ranges.append((off, MiB))
                for off, n in ranges:
                    got = os.pread(fd, n, off)
                    if got != ref[off:off + n]:
                        errors.append("thread %d: pread(%d, %d) returned %d wrong bytes"
                                      % (tid, off, n, len(got)))
                        return
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("thread %d: %r" % (tid, e))
            finally:
                os.close(fd)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        h.check("round %d: %d threads read the right bytes" % (rnd, THREADS), not errors,
                "\n".join(errors[:5]))
        fetched = st.emu_file_stats("f")["read_bytes"] - e0.get("read_bytes", 0)
        s1 = st.stats()
        h.check("round %d: emu served <= size + one chunk per thread" % rnd,
                fetched <= size + THREADS * CS,
                "emu served %d bytes for a %d-byte file (limit %d)" % (
                    fetched, size, size + THREADS * CS))
        h.check("round %d: efscache bytes_from_source <= size + one chunk per thread" % rnd,
                cl.delta(s1, s0, "bytes_from_source") <= size + THREADS * CS,
                "grew by %d" % cl.delta(s1, s0, "bytes_from_source"))
        h.check("round %d: each chunk stored at most once" % rnd,
                cl.delta(s1, s0, "chunks_stored") <= (size + CS - 1) // CS,
                "chunks_stored grew by %d" % cl.delta(s1, s0, "chunks_stored"))
        h.note("round %d: fetch_waits %d misses %d chunks_stored %d emu bytes %d" % (
            rnd, cl.delta(s1, s0, "fetch_waits"), cl.delta(s1, s0, "misses"),
            cl.delta(s1, s0, "chunks_stored"), fetched))
    cl.check_content("bytes equal the source", st.p("f"), st.s("f"))
    st.check_umount("clean unmount")


def test_processes():
    st = cl.Stack()
    size = 24 * MiB + 3
    want = cl.make_file(st.s("f"), size, seed=8)
    for rnd in range(2):
        st.evict("f")
        cl.drop_caches()
        e0 = st.emu_file_stats("f")
        procs = [subprocess.Popen(["sha256sum", st.p("f")], stdout=subprocess.PIPE, text=True)
                 for _ in range(THREADS)]
        outs = [p.communicate(timeout=120)[0].split()[:1] for p in procs]
        h.eq("round %d: %d processes: every hash equals the source" % (rnd, THREADS),
             outs, [[want]] * THREADS)
        fetched = st.emu_file_stats("f")["read_bytes"] - e0.get("read_bytes", 0)
        h.check("round %d: emu served <= size + one chunk per reader" % rnd,
                fetched <= size + THREADS * CS, "emu served %d bytes" % fetched)
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_fio_verify, test_threads, test_processes])
