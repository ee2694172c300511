#!/usr/bin/env python3
"""A real dependency tree under small fd limits (DESIGN rule 14; issue 15, "EMFILE still
reaches users on a real tree").

Debian's dist-packages (python3-torch, -scipy, -pandas, -sklearn, -sympy: 20,306 files in
2,346 directories) served through efs-emu, efscache under `ulimit -n 1024`: `find -type f`
printed "Too many open files" for dozens of directories, while test_bigtree's 200,000
generated files (no emulator below) passed.  The EMFILE was efs-emu's: it holds an O_PATH
fd per inode the kernel knows, and the kernel keeps every inode it looked up, so a tree
with more objects than efs-emu's own fd limit ran it out; efscache passed the source's
EMFILE on (and blamed its own limit in its log).  An NFS client holds no fd per inode, so
efs-emu now keeps its inodes under its limit (it makes the kernel drop idle names), and
efscache tells a source's EMFILE from its own.

efscache's own share: a directory handle held a source fd for as long as the program kept
the directory open (find keeps every ancestor open while it descends), outside the inode
fd budget: enough of them and opendir failed with EMFILE, without the retry lookups get.
Now a stream is closed once read to its end, every open retries after closing idle inode
fds, and the inode fds give way when the process nears its limit.

The tree here has the shape of dist-packages at a third of its size: packages nested up
to six deep, a __pycache__ in each, most directories with a handful of files and a few
with hundreds.  efs-emu runs under a limit of 3,000 fds (below the tree's ~9,000 objects),
efscache and the walker under 1,024.  The walks (find, then stat and read of every file)
must see every file without an error, while the test holds 850 directories of the mount
open; the daemon stays under its limit and logs no fd exhaustion of its own."""

import os
import random
import resource
import subprocess
import time

os.environ.setdefault("EFSCACHE_TEST_TIMEOUT", "900")

import harness as h  # noqa: E402

EMU_NOFILE = 3000
NOFILE = 1024
HELD_DIRS = 850

h.require_fuse()


def make_tree(root, seed=15):
    """~8,000 files in ~1,300 directories shaped like a site-packages."""
    rnd = random.Random(seed)
    files = dirs = 0

    def package(path, depth):
        nonlocal files, dirs
        os.makedirs(path)
        dirs += 1
        nmods = rnd.choice((1, 2, 3, 4, 6, 8, 12)) if depth else rnd.randint(3, 10)
        for k in range(nmods):
            h.write_file(os.path.join(path, "mod%02d.py" % k), b"X = %d\n" % k)
            files += 1
        h.write_file(os.path.join(path, "__init__.py"), b"")
        cache = os.path.join(path, "__pycache__")
        os.mkdir(cache)
        dirs += 1
        for k in range(nmods + 1):
            h.write_file(os.path.join(cache, "mod%02d.cpython-311.pyc" % k), b"\0" * 64)
            files += 1
        files += 1
        if depth < 5:
            for k in range(rnd.choice((0, 0, 1, 2, 3, 4)) if depth else rnd.randint(2, 6)):
                package(os.path.join(path, "sub%d" % k), depth + 1)

    n = 0
    while files < 7000:
        package(os.path.join(root, "pkg%03d" % n), 0)
        n += 1
    # a few wide directories, as torch/include/ATen/ops (hundreds of headers)
    for w in range(3):
        d = os.path.join(root, "pkg%03d" % w, "include", "ops")
        os.makedirs(d)
        dirs += 2
        for k in range(400):
            h.write_file(os.path.join(d, "op%04d.h" % k), b"#pragma once\n")
            files += 1
    return files, dirs


def walk_read(root):
    """stat and read every file; returns (files, errors, first errors)."""
    files = errors = 0
    first = []

    def onerror(e):
        nonlocal errors
        errors += 1
        first.append(str(e))

    for d, subdirs, names in os.walk(root, onerror=onerror):
        for name in names:
            p = os.path.join(d, name)
            try:
                os.stat(p)
                with open(p, "rb") as f:
                    f.read()
                files += 1
            except OSError as e:
                errors += 1
                if len(first) < 5:
                    first.append("%s: %s" % (p, e))
    return files, errors, first


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_real_shape():
    base = h.tmpdir("efscache-realtree-")
    src, emu, mnt = (os.path.join(base, d) for d in ("src", "emu", "mnt"))
    os.mkdir(src)
    t = time.monotonic()
    nfiles, ndirs = make_tree(src)
    h.note("generated %d files in %d directories in %.1f s" % (nfiles, ndirs,
                                                               time.monotonic() - t))
    # efs-emu's limit: below the tree's objects (it may not raise it: soft = hard).
    resource.setrlimit(resource.RLIMIT_NOFILE, (EMU_NOFILE, EMU_NOFILE))
    me = h.mount_emu(src, emu, "latency_ms=0.05", "meta_latency_ms=0.05", "bw_mib=0")
    # efscache and the walker: 1024, as a systemd service or a login shell gets.
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    m = h.mount_efscache(emu, mnt, foreground=True)
    pid = m.daemon_pids()[0]

    r = subprocess.run(["find", mnt, "-type", "f"], capture_output=True, text=True,
                       timeout=600)
    found = len(r.stdout.splitlines())
    h.eq("find -type f through the mount: no error", r.stderr.strip().splitlines()[:3], [])
    h.eq("find -type f: every file", found, nfiles)

    # Hold many directories open, each listed to its end, as find and fts keep ancestors.
    held = []
    err = None
    try:
        for d, subdirs, _ in os.walk(mnt):
            if len(held) >= HELD_DIRS:
                break
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            held.append(fd)
            os.listdir(fd)
    except OSError as e:
        err = "%s after %d directories" % (e, len(held))
    h.check("%d directories of the mount held open, each listed" % HELD_DIRS,
            err is None and len(held) >= HELD_DIRS, err or "only %d held" % len(held))
    try:
        files, errors, first = walk_read(mnt)
        h.eq("while they are held: stat and read of every file, no error", errors, 0, first)
        h.eq("... every file", files, nfiles)
        nfds = fd_count(pid)
        h.note("daemon: %d fds with %d directories held open" % (nfds, len(held)))
        h.check("the daemon stays under its limit", nfds < NOFILE, nfds)
    finally:
        for fd in held:
            os.close(fd)
    emu_st = h.emu_stats(emu)
    h.note("efs-emu: %s inodes held now, %s names dropped to stay under its limit"
           % (emu_st.get("inodes"), emu_st.get("pruned")))
    log = m.stderr()
    h.check("efscache logged no fd exhaustion", "file descriptors" not in log, log[-2000:])
    h.check("clean unmount", not m.umount(timeout=120))
    h.check("clean unmount of the emulator", not me.umount(timeout=60))


h.run_tests([test_real_shape])
