#!/usr/bin/env python3
"""A read interrupted while the source hangs, whose file is then closed and whose inode the
kernel then forgets (issue 15, H3): the worker that waited in the source must let go of
what its read holds before the inode can go.  Before the fix it dropped its hold on the
inode first; the inode's release then waited for the pins that very worker held on a
cached chunk: the worker hung for ever and the daemon could not exit after unmount.

Three readers, each interrupted by a signal while the source hangs (O_DIRECT, so the
request is the reader's own and the interrupt answers it EINTR at once):
  - a read that straddles a cached chunk (pinned for the reply) and a missing one;
  - a read through a handle opened for writing (it reads the source through the
    handle's own fd, which the release closes);
  - a read whose handle is released and whose inode is forgotten before it even gets to
    the source (the interrupt answers while the worker still works).
After the source answers: the daemon still serves the file right, and exits at unmount."""

import os
import signal
import subprocess
import sys

os.environ.setdefault("EFSCACHE_TEST_TIMEOUT", "600")

import cachelib as cl  # noqa: E402
from cachelib import MiB, KiB, h  # noqa: E402

READER = r'''
import mmap, os, signal, sys
class Interrupted(Exception):
    pass
def handler(sig, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
path, mode, off, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
flags = os.O_DIRECT | (os.O_RDWR if mode == "rw" else os.O_RDONLY)
fd = os.open(path, flags)
buf = mmap.mmap(-1, n)
print("open", flush=True)
sys.stdin.readline()
try:
    got = os.preadv(fd, [buf], off)
    print("data %d" % got, flush=True)
except Interrupted:
    print("interrupted", flush=True)
except OSError as e:
    print("errno %d" % e.errno, flush=True)
os.close(fd)
'''


def start_reader(path, mode, off, n):
    p = subprocess.Popen([sys.executable, "-c", READER, path, mode, str(off), str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    h.eq("reader (%s) opened the file" % mode, p.stdout.readline().strip(), "open")
    return p


def interrupt(p, what):
    p.send_signal(signal.SIGUSR1)
    try:
        out = p.communicate(timeout=60)[0].strip()
    except subprocess.TimeoutExpired:
        p.kill()
        out = "still blocked"
    h.eq("%s: the reader interrupted while the source hangs gets EINTR" % what, out,
         "interrupted")


def read_direct(path, off, n):
    import mmap
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, n)
    try:
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:got])
    finally:
        buf.close()
        os.close(fd)


def forget_all(st):
    """Make the kernel forget every inode of the mount it holds no reference to: the
    daemon's inode count drops to those still in use."""
    before = st.stats(settled=False)["inodes"]
    cl.drop_caches()
    cl.wait_for(lambda: st.stats(settled=False)["inodes"] < before, 10)


def run_case(name, mode, off, n, cache_first):
    st = cl.Stack(cache_opts=("prefetch=0",), chunk_size="1M")
    want = cl.make_file(st.s("f"), 4 * MiB, seed=15)
    if cache_first:
        h.eq("%s: the first chunk is read and cached" % name,
             len(read_direct(st.p("f"), 0, MiB)), MiB)
        st.stats()  # write-behind done
    st.emu_set("hang_ms", "0")  # until cleared
    p = start_reader(st.p("f"), mode, off, n)
    st.emu_set("hang", "f")
    p.stdin.write("go\n")
    p.stdin.flush()
    h.check("%s: the read hangs in the source" % name,
            cl.wait_for(lambda: st.emu_stats()["hung_now"] >= 1, 30),
            "hung_now %d" % st.emu_stats()["hung_now"])
    interrupt(p, name)
    # The reader has closed the file; the kernel releases it and, once its dentry is
    # dropped, forgets the inode: only the worker still waiting in the source holds it.
    forget_all(st)
    st.emu_set("hang", "")
    h.check("%s: the source answered the hung request" % name,
            cl.wait_for(lambda: st.emu_stats()["hung_now"] == 0, 30))
    data = read_direct(st.p("f"), 0, 4 * MiB)
    h.check("%s: the file still reads right through the mount" % name, cl.sha(data) == want)
    # The worker that waited must be back: the daemon exits once unmounted.
    st.check_umount("%s: the daemon exits after unmount (no worker left waiting)" % name)


def test_straddling_cached_chunk():
    # 8 KiB at 1 MiB - 4 KiB: the first half from the cached chunk 0 (pinned for the
    # reply), the second from chunk 1, fetched from the hanging source.
    run_case("cached + missing chunk", "ro", MiB - 4 * KiB, 8 * KiB, True)


def test_handle_fd_read():
    # A handle opened read-write reads through its own source fd (the file is not
    # cached for it): the release after the interrupt must not close that fd under the
    # worker that still reads from it.
    run_case("read through a writer's handle", "rw", 0, 64 * KiB, False)


def test_uncached_read():
    run_case("missing chunk", "ro", 0, 64 * KiB, False)


h.require_fuse()
h.run_tests([test_straddling_cached_chunk, test_handle_fd_read, test_uncached_read])
