#!/usr/bin/env python3
"""SOURCE must be the file system it claims to be, at start and while mounted (issue 16,
"empty tree hazard").  With real mounts (tmpfs and bind mounts stand in for EFS):

- -o require_source_mount refuses a SOURCE that is not a mount point: exit 1, stderr names
  SOURCE and what is there instead, nothing mounted; it accepts a tmpfs and a bind mount;
  =FSTYPE refuses another type (naming both); efs means nfs4.
- efscache started over an empty directory (no option), then a file system mounted on
  SOURCE: the daemon does not go on serving the empty directory; it unmounts and exits 1
  with a log line that says so, and a restart serves the new tree.
- SOURCE unmounted and another file system mounted in its place (an operator's or an
  agent's remount): the same.
- SOURCE lazily unmounted, nothing mounted again: the same (the path now leads to the
  directory underneath).
- A daemon whose SOURCE stays put keeps running across the watch's period.
- Without /proc (mountinfo unreadable) the daemon serves unwatched, with a warning;
  require_source_mount refuses.
Witnesses: the daemon's exit status and stderr, /proc/self/mountinfo, the bytes read."""

import os
import subprocess
import time

import harness as h

h.require_fuse()
if os.geteuid() != 0:
    print("1..0 # SKIP mounting tmpfs and bind mounts over SOURCE needs root")
    raise SystemExit(77)

BASE = h.tmpdir()
_ours = []  # mounts made here (not FUSE), innermost last


def sh_mount(*args):
    subprocess.run(["mount"] + list(args), check=True, capture_output=True)
    _ours.append(h.canon(args[-1]))


def sh_umount(path, lazy=False):
    subprocess.run(["umount"] + (["-l"] if lazy else []) + [path], check=True,
                   capture_output=True)
    _ours.remove(h.canon(path))


def _umount_ours():
    for p in reversed(list(_ours)):
        while h.mounts_at(p):
            if subprocess.run(["umount", "-l", p], capture_output=True).returncode:
                break
    del _ours[:]


# After the FUSE mounts (stage 20), before the temp dirs are removed (30).
h.on_cleanup(25, _umount_ours)

_n = [0]


def dirs(name):
    _n[0] += 1
    d = os.path.join(BASE, "%s-%d" % (name, _n[0]))
    src, mnt = os.path.join(d, "src"), os.path.join(d, "mnt")
    h.mkdirs(src, mnt)
    return d, src, mnt


def start(src, mnt, *opts):
    """efscache -f: returns (Popen, stderr path); waits for the mount or the exit."""
    d = os.path.dirname(src)
    errp = os.path.join(d, "stderr-%d" % time.monotonic_ns())
    errf = open(errp, "wb")
    p = subprocess.Popen([h.EFSCACHE_BIN, src, mnt, "-f", "-o",
                          ",".join(("cache_dir=" + os.path.join(d, "cache"),) + opts)],
                         stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                         start_new_session=True)
    errf.close()
    h.note_daemon_pids([p.pid])
    h.note_stderr_file(errp)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and p.poll() is None and not h.fuse_mounts_at(mnt):
        time.sleep(0.02)
    return p, errp


def stop(p, mnt):
    if h.fuse_mounts_at(mnt):
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    try:
        return p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def text(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_exit(p, timeout):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_refused_when_not_a_mount_point():
    d, src, mnt = dirs("plain")
    h.write_file(os.path.join(src, "f"), b"x")
    p, errp = start(src, mnt, "require_source_mount")
    rc = wait_exit(p, 15)
    err = text(errp)
    h.eq("plain dir + require_source_mount: exit status 1", rc, 1, err)
    h.check("... stderr names SOURCE and says it is not a mount point",
            "'%s' is not a mount point" % src in err, err)
    under = [m for m in h.mounts() if m["mountpoint"] == "/" or src.startswith(
        m["mountpoint"] + "/")][-1]
    h.check("... and what it is: a directory of the %s mounted at %s" % (
        under["fstype"], under["mountpoint"]),
        under["fstype"] in err and "mounted at '%s'" % under["mountpoint"] in err, err)
    h.check("... nothing mounted", not h.fuse_mounts_at(mnt))
    h.check("... cache_dir not created", not os.path.exists(os.path.join(d, "cache")))
    if rc is None:
        stop(p, mnt)


def test_accepted_mounts_and_types():
    d, src, mnt = dirs("tmpfs")
    sh_mount("-t", "tmpfs", "-o", "size=8m", "efs-test-src", src)
    h.write_file(os.path.join(src, "f"), b"on tmpfs\n")
    for opt in ("require_source_mount", "require_source_mount=tmpfs"):
        p, errp = start(src, mnt, opt)
        ok = bool(h.fuse_mounts_at(mnt))
        h.check("tmpfs SOURCE + %s: mounts" % opt, ok, text(errp))
        if ok:
            h.eq("... and serves its file", h.read_file(os.path.join(mnt, "f")), b"on tmpfs\n")
        h.eq("... clean exit 0", stop(p, mnt), 0, text(errp))
    for opt, want in (("require_source_mount=nfs4", "nfs4"), ("require_source_mount=efs",
                                                              "nfs4")):
        p, errp = start(src, mnt, opt)
        rc = wait_exit(p, 15)
        err = text(errp)
        h.eq("tmpfs SOURCE + %s: exit status 1" % opt, rc, 1, err)
        h.check("... stderr names SOURCE, the type found and the one asked for",
                "'%s'" % src in err and "of type tmpfs" in err and "not %s" % want in err, err)
        h.check("... nothing mounted", not h.fuse_mounts_at(mnt))
        if rc is None:
            stop(p, mnt)
    sh_umount(src)

    # A bind mount is a mount point too (what a container's -v gives).
    d, src, mnt = dirs("bind")
    h.write_file(os.path.join(src, "g"), b"bound\n")
    sh_mount("--bind", src, src)
    p, errp = start(src, mnt, "require_source_mount")
    ok = bool(h.fuse_mounts_at(mnt))
    h.check("bind-mounted SOURCE + require_source_mount: mounts", ok, text(errp))
    if ok:
        h.eq("... and serves its file", h.read_file(os.path.join(mnt, "g")), b"bound\n")
    h.eq("... clean exit 0", stop(p, mnt), 0, text(errp))
    sh_umount(src)


def lost(name, p, errp, mnt, needle):
    """The daemon must notice within a few watch periods, log it, unmount and exit 1."""
    rc = wait_exit(p, 20)
    err = text(errp)
    h.eq("%s: the daemon exits with status 1" % name, rc, 1, err[-800:])
    h.check("%s: its log says SOURCE changed (%r) and that it exits for a restart" % (
        name, needle), needle in err and "exiting with status 1" in err, err[-800:])
    h.check("%s: nothing left mounted at MOUNTPOINT (no dead mount)" % name,
            not h.fuse_mounts_at(mnt))
    if rc is None:
        stop(p, mnt)


def test_mounted_over_after_start():
    """The hazard as reported: efscache over an empty /mnt/efs, then EFS mounted there."""
    d, src, mnt = dirs("late")
    p, errp = start(src, mnt)
    h.check("empty SOURCE, no option: mounts", bool(h.fuse_mounts_at(mnt)), text(errp))
    h.eq("... shows 0 entries", os.listdir(mnt), [])
    sh_mount("-t", "tmpfs", "-o", "size=8m", "efs-test-late", src)
    h.write_file(os.path.join(src, "model.bin"), b"the real tree\n")
    lost("file system mounted on SOURCE after start", p, errp, mnt,
         "another file system is mounted at SOURCE '%s'" % src)
    # What the supervisor does next: start again, and the new tree is served.
    p, errp = start(src, mnt, "require_source_mount=tmpfs")
    h.check("restart: mounts", bool(h.fuse_mounts_at(mnt)), text(errp))
    if h.fuse_mounts_at(mnt):
        h.eq("restart: serves the tree mounted on SOURCE", os.listdir(mnt), ["model.bin"])
        h.eq("restart: right bytes", h.read_file(os.path.join(mnt, "model.bin")),
             b"the real tree\n")
    h.eq("restart: clean exit 0", stop(p, mnt), 0, text(errp))
    sh_umount(src)


def test_remounted_while_running():
    d, src, mnt = dirs("remount")
    sh_mount("-t", "tmpfs", "-o", "size=8m", "efs-test-first", src)
    h.write_file(os.path.join(src, "a"), b"first\n")
    p, errp = start(src, mnt, "require_source_mount=tmpfs")
    h.check("remount: first mounts", bool(h.fuse_mounts_at(mnt)), text(errp))
    h.eq("remount: reads the first tree", h.read_file(os.path.join(mnt, "a")), b"first\n")
    # Stays up while SOURCE stays put: more than one watch period (2 s).
    time.sleep(4.5)
    h.check("remount: still running after 4.5 s with SOURCE unchanged",
            p.poll() is None and bool(h.fuse_mounts_at(mnt)), text(errp))
    fd = os.open(os.path.join(mnt, "a"), os.O_RDONLY)  # a reader holding a file open
    sh_umount(src, lazy=True)
    sh_mount("-t", "tmpfs", "-o", "size=8m", "efs-test-second", src)
    h.write_file(os.path.join(src, "b"), b"second\n")
    lost("SOURCE unmounted and mounted again", p, errp, mnt,
         "another file system is mounted at SOURCE '%s'" % src)
    # A file held open across the exit belongs to the old mount: ENOTCONN, as after any
    # daemon exit (docs/operations.md says so); it is reopened through the new mount.
    h.eq("SOURCE unmounted and mounted again: a file held open gets ENOTCONN",
         h.errno_of(os.pread, fd, 10, 0), h.errno.ENOTCONN)
    try:
        os.close(fd)
    except OSError:
        pass  # the release could not reach the daemon: the fd is closed anyway
    p, errp = start(src, mnt, "require_source_mount=tmpfs")
    if h.fuse_mounts_at(mnt):
        h.eq("remount, restarted: serves the second tree", os.listdir(mnt), ["b"])
    else:
        h.check("remount, restarted: mounts", False, text(errp))
    h.eq("remount, restarted: clean exit 0", stop(p, mnt), 0, text(errp))

    # Unmounted and nothing mounted again: the path leads to the directory underneath.
    p, errp = start(src, mnt, "require_source_mount")
    h.check("unmount: mounts", bool(h.fuse_mounts_at(mnt)), text(errp))
    sh_umount(src, lazy=True)
    lost("SOURCE unmounted", p, errp, mnt, "is no longer the tmpfs mount from efs-test-second")


def test_without_proc():
    """Where /proc/self/mountinfo cannot be read (a chroot or a namespace without /proc)
    the daemon serves as before, unwatched, with a warning; require_source_mount cannot
    tell and refuses."""
    d, src, mnt = dirs("noproc")
    h.write_file(os.path.join(src, "f"), b"no proc\n")
    cd = os.path.join(d, "cache")
    script = ('mount -t tmpfs none /proc || exit 3; '
              '"$0" "$1" "$2" -o cache_dir="$3" 2>"$4" || exit 4; cat "$2/f"; umount "$2"; '
              '"$0" "$1" "$2" -f -o cache_dir="$3",require_source_mount 2>"$5"; echo "rc=$?"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        h.EFSCACHE_BIN, src, mnt, cd, os.path.join(d, "err1"),
                        os.path.join(d, "err2")],
                       capture_output=True, text=True, timeout=60)
    if r.returncode == 3:
        h.skip("without /proc", "cannot mount over /proc in a new mount namespace")
        return
    h.check("without /proc: the daemon mounts and serves", r.stdout.startswith("no proc\n"),
            (r.returncode, r.stdout, r.stderr, text(os.path.join(d, "err1"))))
    h.check("without /proc: it warns that a remount will not be noticed",
            "will not be noticed" in text(os.path.join(d, "err1")),
            text(os.path.join(d, "err1")))
    h.check("without /proc: require_source_mount cannot tell, and refuses (exit 1)",
            "rc=1" in r.stdout and "cannot find its mount" in text(os.path.join(d, "err2")),
            (r.stdout, text(os.path.join(d, "err2"))))


if __name__ == "__main__":
    h.run_tests([test_refused_when_not_a_mount_point, test_accepted_mounts_and_types,
                 test_mounted_over_after_start, test_remounted_while_running,
                 test_without_proc])
