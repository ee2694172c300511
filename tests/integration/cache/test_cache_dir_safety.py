#!/usr/bin/env python3
"""Safe in /tmp, one daemon per cache_dir: a second daemon on a cache_dir in use is
refused ("in use", non-zero exit, nothing mounted); a cache_dir that is a symlink, owned by
another user, writable by group or others, or inside SOURCE or MOUNTPOINT (also through a
symlinked parent) is refused with a message naming it, nothing mounted and nothing
written into SOURCE; a new cache_dir is created 0700 and its files 0600 even under umask
000."""

import os
import stat
import subprocess

import cachelib as cl
from cachelib import MiB, h

NOBODY = 65534


def try_start(src, mnt, opts):
    """Start efscache (daemon mode); returns (exit code, stderr, was it mounted).  Cleans
    up a mount made by mistake."""
    os.makedirs(mnt, exist_ok=True)
    try:
        r = subprocess.run([h.EFSCACHE_BIN, src, mnt, "-o", ",".join(opts)],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", (e.stderr or b"").decode(errors="replace")
    mounted = h.is_mounted(mnt)
    if mounted:
        pids = h.find_daemon_pids(h.EFSCACHE_BIN, mnt)
        h.note_daemon_pids(pids)
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        for p in pids:
            h.wait_pid_gone(p, 10) or os.kill(p, 9)
    return rc, err, mounted


def check_refused(label, src, mnt, cache_dir, extra=(), must_say=None):
    rc, err, mounted = try_start(src, mnt, ["cache_dir=" + cache_dir] + list(extra))
    h.check("%s: refused (non-zero exit, nothing mounted)" % label,
            rc not in (0, "timeout") and not mounted,
            "exit %s, mounted %s, stderr %r" % (rc, mounted, err.strip()))
    names = must_say or [cache_dir, "cache_dir"]
    h.check("%s: the message names cache_dir" % label, any(n in err for n in names),
            "stderr %r does not mention any of %s" % (err.strip(), names))
    return err


def test_second_daemon():
    st = cl.Stack()
    want = cl.make_file(st.s("f"), 1 * MiB, seed=1)
    cl.check_content("first daemon serves", st.p("f"), st.s("f"), want)
    mnt2 = os.path.join(st.base, "mnt2")
    err = check_refused("second daemon on the same cache_dir", st.emu, mnt2, st.cache_dir)
    h.check("second daemon: says \"in use\"", "in use" in err, "stderr %r" % err.strip())
    # also with -f (foreground): refused the same way, not hanging
    os.makedirs(mnt2, exist_ok=True)
    try:
        r = subprocess.run([h.EFSCACHE_BIN, st.emu, mnt2, "-f", "-o",
                            "cache_dir=" + st.cache_dir], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    mounted = h.is_mounted(mnt2)
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", mnt2], capture_output=True)
    h.check("second daemon with -f: refused", rc not in (0, "timeout") and not mounted,
            "exit %s mounted %s stderr %r" % (rc, mounted, err.strip()))
    # same cache_dir spelled differently (trailing slash, a symlinked parent)
    alias = os.path.join(st.base, "alias")
    os.symlink(st.base, alias)
    for spelled in (st.cache_dir + "/", os.path.join(st.base, ".", "cache"),
                    os.path.join(alias, "cache")):
        rc, err, mounted = try_start(st.emu, mnt2, ["cache_dir=" + spelled])
        h.check("second daemon, cache_dir spelled %r: refused" % spelled,
                rc not in (0, "timeout") and not mounted,
                "exit %s mounted %s stderr %r" % (rc, mounted, err.strip()))
    cl.check_content("first daemon still serves", st.p("f"), st.s("f"), want)
    st.check_umount("clean unmount")
    # once the first daemon is gone, the cache_dir can be used again
    st.mount()
    cl.check_content("after the first daemon exited, a new one starts", st.p("f"), st.s("f"),
                     want)
    st.check_umount("clean unmount (2)")


def test_bad_cache_dirs():
    st = cl.Stack()
    base = st.base
    mnt2 = os.path.join(base, "mnt2")
    st.check_umount("unmount the stack's efscache")

    # a symlink to a good directory
    real = os.path.join(base, "real")
    os.makedirs(real, mode=0o700)
    os.chmod(real, 0o700)
    link = os.path.join(base, "link")
    os.symlink(real, link)
    check_refused("cache_dir is a symlink", st.emu, mnt2, link)
    h.eq("symlink: nothing created in its target", os.listdir(real), [])

    # owned by another user
    other = os.path.join(base, "other")
    os.makedirs(other)
    os.chmod(other, 0o700)
    os.chown(other, NOBODY, NOBODY)
    check_refused("cache_dir owned by nobody", st.emu, mnt2, other)

    # writable by others / by group
    for mode in (0o777, 0o1777, 0o770, 0o702):
        d = os.path.join(base, "mode%o" % mode)
        os.makedirs(d)
        os.chmod(d, mode)
        check_refused("cache_dir mode %o" % mode, st.emu, mnt2, d)

    # inside SOURCE (SOURCE is the emu mount; its files land in base/src)
    before = sorted(os.listdir(st.src))
    os.makedirs(st.s("sub"))
    check_refused("cache_dir inside SOURCE", st.emu, mnt2, os.path.join(st.emu, "sub", "cache"))
    check_refused("cache_dir = SOURCE", st.emu, mnt2, st.emu)
    # through a symlinked parent that points into SOURCE
    into_src = os.path.join(base, "into-src")
    os.symlink(os.path.join(st.emu, "sub"), into_src)
    check_refused("cache_dir inside SOURCE via a symlinked parent", st.emu, mnt2,
                  os.path.join(into_src, "cache"))
    h.eq("nothing written into SOURCE", sorted(os.listdir(st.src)), sorted(before + ["sub"]))
    h.eq("nothing written into SOURCE/sub", os.listdir(st.s("sub")), [])

    # inside MOUNTPOINT
    check_refused("cache_dir inside MOUNTPOINT", st.emu, mnt2, os.path.join(mnt2, "cache"))
    check_refused("cache_dir = MOUNTPOINT", st.emu, mnt2, mnt2)
    h.eq("nothing created inside MOUNTPOINT", os.listdir(mnt2), [])

    # a file, not a directory
    f = os.path.join(base, "afile")
    with open(f, "w") as fh:
        fh.write("x")
    os.chmod(f, 0o600)
    check_refused("cache_dir is a regular file", st.emu, mnt2, f)

    st.emu_m.umount()


def test_new_cache_dir_modes():
    st = cl.Stack(cache_dir=None)
    st.check_umount("unmount the stack's efscache")
    cache_dir = os.path.join(st.base, "fresh")
    st.cache_dir = cache_dir
    old = os.umask(0)
    try:
        st.mount()
    finally:
        os.umask(old)
    h.eq("new cache_dir mode", oct(stat.S_IMODE(os.lstat(cache_dir).st_mode)), oct(0o700))
    want = cl.make_file(st.s("f"), 2 * MiB, seed=3)
    cl.check_content("read under umask 000", st.p("f"), st.s("f"), want)
    bad = []
    for dirpath, dirnames, filenames in os.walk(cache_dir):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            m = stat.S_IMODE(os.lstat(p).st_mode)
            if m != 0o700:
                bad.append("%s %o" % (os.path.relpath(p, cache_dir), m))
        for n in filenames:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            # every file is a regular file, except the daemon's control socket
            ok_type = stat.S_ISREG(s.st_mode) or (n == "ctl.sock" and stat.S_ISSOCK(s.st_mode))
            if not ok_type or stat.S_IMODE(s.st_mode) != 0o600:
                bad.append("%s %o" % (os.path.relpath(p, cache_dir), s.st_mode))
            if s.st_uid != os.getuid():
                bad.append("%s owned by %d" % (os.path.relpath(p, cache_dir), s.st_uid))
    h.check("every directory in cache_dir is 0700, every file 0600", not bad, bad[:10])
    h.check("records were written", len(cl.records(cache_dir)) >= 1, str(os.listdir(cache_dir)))
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_second_daemon, test_bad_cache_dirs, test_new_cache_dir_modes])
