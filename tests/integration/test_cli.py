#!/usr/bin/env python3
"""The command line: every bad option value and bad path is refused before mounting, with
the option/value or the path on stderr and nothing mounted; good values mount; --help
lists every option of DESIGN.md section 2; --version; daemon mode vs -f; SIGTERM/SIGINT
unmount and exit 0; relative paths; fsname; -o ro gives EROFS."""

import os
import shutil
import signal
import subprocess
import tempfile

import harness as h  # noqa: E402

h.require_fuse()
BIN = h.EFSCACHE_BIN
BASE = h.tmpdir()
SRC = os.path.join(BASE, "src")
MNT = os.path.join(BASE, "mnt")
h.mkdirs(SRC, MNT)
h.write_file(os.path.join(SRC, "file"), b"hello\n")
os.mkdir(os.path.join(SRC, "sub"))
_n = [0]


def cache_dir():
    _n[0] += 1
    return os.path.join(BASE, "cache-%d" % _n[0])


def run(args, timeout=20, cwd=None):
    """Run efscache with args; if it unexpectedly mounts something, clean it up."""
    try:
        r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=cwd)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", e.stdout or "", e.stderr or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
    if any(mk in err for mk in h.SANITIZER_MARKERS):
        h.check("no sanitizer report from: efscache %s" % " ".join(args), False, err[-3000:])
    leaked = []
    for m in h.mounts_under(BASE):
        leaked.append(m["mountpoint"])
        subprocess.run(["fusermount3", "-u", m["mountpoint"]], capture_output=True)
        if h.mounts_at(m["mountpoint"]):
            subprocess.run(["fusermount3", "-u", "-z", m["mountpoint"]], capture_output=True)
    for mp in set(leaked) | {MNT}:
        for pid in h.find_daemon_pids(BIN, mp):
            os.kill(pid, signal.SIGKILL)
    return rc, out, err, leaked


def bad_option(opt, needles, ours=True):
    cd = cache_dir()
    args = [SRC, MNT, "-o", "cache_dir=%s,%s" % (cd, opt)]
    rc, out, err, leaked = run(args)
    h.check("-o %s: exits non-zero" % opt, isinstance(rc, int) and rc != 0, "exit %s" % rc)
    missing = [n for n in needles if n not in err]
    h.check("-o %s: stderr names %s" % (opt, " and ".join(repr(n) for n in needles)),
            not missing, "stderr: %r" % err.strip()[:500])
    h.check("-o %s: nothing mounted" % opt, not leaked, leaked)
    if ours:  # our options are validated before anything touches the disk
        h.check("-o %s: cache_dir not created" % opt,
                not os.path.exists(cd) or not os.listdir(cd),
                os.listdir(cd) if os.path.exists(cd) else "")


def test_bad_option_values():
    for opt, needles in [
        ("cache_size=10X", ["cache_size", "10X"]),
        ("cache_size=0", ["cache_size", "0"]),
        ("cache_size=", ["cache_size"]),
        ("cache_size=-1G", ["cache_size", "-1G"]),
        ("cache_size=99999999999T", ["cache_size", "99999999999T"]),
        ("chunk_size=3M", ["chunk_size", "3M"]),
        ("chunk_size=1K", ["chunk_size", "1K"]),
        ("chunk_size=128M", ["chunk_size", "128M"]),
        ("chunk_size=32K", ["chunk_size", "32K"]),
        ("prefetch=-1", ["prefetch", "-1"]),
        ("prefetch=65", ["prefetch", "65"]),
        ("prefetch=two", ["prefetch", "two"]),
        ("verify=sometimes", ["verify", "sometimes"]),
        ("ttl=-5", ["ttl", "-5"]),
        ("ttl=abc", ["ttl", "abc"]),
        ("ttl=1.5x", ["ttl", "1.5x"]),
        ("cache_min_free=150%", ["cache_min_free", "150%"]),
        ("cache_min_free=abc", ["cache_min_free", "abc"]),
        ("max_threads=0", ["max_threads", "0"]),
        ("max_threads=lots", ["max_threads", "lots"]),
    ]:
        bad_option(opt, needles)
    # refused by libfuse, possibly after efscache opened its cache_dir
    bad_option("bogus_option", ["bogus_option"], ours=False)
    bad_option("bogus_option=1", ["bogus_option"], ours=False)


def bad_paths(name, args, needles, cwd=None):
    rc, out, err, leaked = run(args, cwd=cwd)
    h.check("%s: exits non-zero" % name, isinstance(rc, int) and rc != 0, "exit %s" % rc)
    missing = [n for n in needles if n not in err]
    h.check("%s: stderr says so%s" % (name, (" and names " + ", ".join(needles)) if needles
                                      else ""),
            err.strip() and not missing, "stderr: %r" % err.strip()[:500])
    h.check("%s: nothing mounted" % name, not leaked, leaked)


def test_bad_paths():
    notdir = os.path.join(BASE, "regular-file")
    h.write_file(notdir, b"x")
    missing = os.path.join(BASE, "does-not-exist")
    inner = os.path.join(SRC, "sub")
    outer_src = os.path.join(BASE, "outer")
    os.makedirs(os.path.join(outer_src, "inner-mnt"), exist_ok=True)
    cd = ["-o", "cache_dir=" + cache_dir()]
    bad_paths("no arguments", [], [])
    bad_paths("missing MOUNTPOINT", [SRC] + cd, [])
    bad_paths("missing SOURCE and MOUNTPOINT (only options)", cd, [])
    bad_paths("SOURCE is a regular file", [notdir, MNT] + cd, [notdir])
    bad_paths("SOURCE does not exist", [missing, MNT] + cd, [missing])
    bad_paths("MOUNTPOINT does not exist", [SRC, missing] + cd, [missing])
    bad_paths("MOUNTPOINT is a regular file", [SRC, notdir] + cd, [notdir])
    bad_paths("MOUNTPOINT inside SOURCE", [SRC, inner] + cd, [SRC])
    bad_paths("SOURCE inside MOUNTPOINT", [os.path.join(outer_src, "inner-mnt"), outer_src] + cd,
              [outer_src])
    bad_paths("MOUNTPOINT equals SOURCE", [SRC, SRC] + cd, [SRC])
    bad_paths("cache_dir inside SOURCE", [SRC, MNT, "-o", "cache_dir=" + SRC + "/cache"],
              [SRC + "/cache"])
    bad_paths("cache_dir inside MOUNTPOINT", [SRC, MNT, "-o", "cache_dir=" + MNT + "/cache"],
              [MNT + "/cache"])
    bad_paths("cache_dir is SOURCE itself", [SRC, MNT, "-o", "cache_dir=" + SRC], [SRC])
    bad_paths("too many arguments", [SRC, MNT, BASE] + cd, [])
    bad_paths("unknown flag -Z", [SRC, MNT, "-Z"] + cd, ["-Z"])
    h.check("refused paths left SOURCE untouched", sorted(os.listdir(SRC)) == ["file", "sub"],
            os.listdir(SRC))


def test_good_values_mount():
    for opt in ["cache_size=512M", "cache_size=1T", "cache_size=1073741824", "chunk_size=64K",
                "chunk_size=64M", "chunk_size=1M", "prefetch=0", "prefetch=64", "verify=once",
                "verify=always", "verify=never", "ttl=0", "ttl=3600", "ttl=never",
                "cache_min_free=0%", "cache_min_free=5%", "cache_min_free=1G",
                "max_threads=1", "max_threads=4", "fsname=myefs", "subtype=efscache",
                "default_permissions"]:
        try:
            m = h.mount_efscache(SRC, MNT, opt)
        except h.MountError as e:
            h.check("-o %s is accepted and mounts" % opt, False, e)
            continue
        try:
            ok = h.read_file(os.path.join(MNT, "file")) == b"hello\n"
            h.check("-o %s is accepted and mounts a working file system" % opt, ok)
            if opt.startswith("fsname="):
                h.eq("-o fsname=myefs: mountinfo source", m.info["source"], "myefs")
            if opt.startswith("subtype="):
                h.eq("-o subtype=efscache: mountinfo type", m.info["fstype"], "fuse.efscache")
        finally:
            h.unmount(m)


def test_help_version():
    for flag in ("--help", "-h"):
        rc, out, err, leaked = run([flag])
        h.eq("%s exits 0" % flag, rc, 0, err[:300])
        missing = [o for o in ("cache_dir", "cache_size", "cache_min_free", "ttl", "chunk_size",
                               "prefetch", "verify", "ro", "immutable", "allow_other", "-f", "-d",
                               "-o")
                   if o not in out]
        h.check("%s prints usage on stdout naming every option of DESIGN.md section 2" % flag,
                not missing, "missing %s; stdout %r" % (missing, out[:300]))
        h.check("%s mounts nothing" % flag, not leaked)
    for flag in ("--version", "-V"):
        rc, out, err, leaked = run([flag])
        h.eq("%s exits 0" % flag, rc, 0, err[:300])
        h.check("%s prints a version number" % flag,
                any(c.isdigit() for c in out + err) and "efscache" in (out + err).lower(),
                repr(out + err))
    rc, out, err, leaked = run([SRC, MNT, "--help"])
    h.check("--help after paths: exits 0 and mounts nothing", rc == 0 and not leaked,
            (rc, leaked))


def test_daemon_mode():
    """Without -f: exit 0 once mounted, daemon keeps running without holding the caller's
    stdout/stderr (so `$(efscache ...)` and systemd Type=forking work), and exits on
    fusermount3 -u."""
    cd = cache_dir()
    p = subprocess.Popen([BIN, SRC, MNT, "-o", "cache_dir=" + cd], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = "still running after 30s"
    h.eq("without -f: the command exits 0", rc, 0)
    h.check("without -f: mounted when the command returns", h.is_mounted(MNT))
    pids = h.find_daemon_pids(BIN, MNT)
    h.note_daemon_pids(pids)
    h.check("without -f: a daemon process keeps running", len(pids) == 1, pids)
    import select
    r, _, _ = select.select([p.stdout, p.stderr], [], [], 10)
    eof = all(f in r and not os.read(f.fileno(), 65536) for f in (p.stdout, p.stderr))
    h.check("without -f: the daemon does not keep the caller's stdout/stderr open", eof)
    p.stdout.close()
    p.stderr.close()
    try:
        h.eq("without -f: the mount works", h.read_file(os.path.join(MNT, "file")), b"hello\n")
    finally:
        subprocess.run(["fusermount3", "-u", MNT], capture_output=True)
    gone = all(h.wait_pid_gone(pid, 10) for pid in pids)
    h.check("fusermount3 -u: the daemon exits by itself", gone, pids)
    for pid in h.find_daemon_pids(BIN, MNT):
        os.kill(pid, signal.SIGKILL)
    if p.poll() is None:
        p.kill()
        p.wait()
    h.check("fusermount3 -u: unmounted", not h.is_mounted(MNT))


def test_signals():
    for sig in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(sig).name
        try:
            m = h.mount_efscache(SRC, MNT, foreground=True)
        except h.MountError as e:
            h.check("-f mount for %s" % name, False, e)
            continue
        fd = os.open(os.path.join(MNT, "file"), os.O_RDONLY) if sig == signal.SIGINT else None
        try:
            os.kill(m.proc.pid, sig)
            try:
                rc = m.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                rc = "still running"
        finally:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass  # ENOTCONN: the daemon is gone
        busy = " with a file open on the mount" if fd is not None else ""
        h.eq("%s to a foreground daemon%s: exit code 0" % (name, busy), rc, 0, m.stderr()[-500:])
        h.check("%s to a foreground daemon%s: unmounted" % (name, busy), not h.is_mounted(MNT),
                h.fuse_mounts_at(MNT))
        probs = m.umount()
        h.check("%s: nothing left to clean up" % name, not probs, probs)
    # SIGTERM to a daemonized one
    try:
        m = h.mount_efscache(SRC, MNT)
    except h.MountError as e:
        h.check("daemon mount for SIGTERM", False, e)
        return
    pids = m.daemon_pids()
    for p in pids:
        os.kill(p, signal.SIGTERM)
    h.check("SIGTERM to the background daemon: it exits", all(h.wait_pid_gone(p, 15)
                                                              for p in pids), pids)
    h.check("SIGTERM to the background daemon: unmounted", not h.is_mounted(MNT))
    m.umount()


def test_debug_flag():
    """-d: debug output, stays in the foreground."""
    try:
        m = h.mount_efscache(SRC, MNT, extra_args=["-d"])  # no -f: -d implies it
    except h.MountError as e:
        h.check("-d mounts", False, e)
        return
    try:
        h.check("-d stays in the foreground (the started process serves the mount)",
                m.proc.poll() is None and m.proc.pid in h.find_daemon_pids(BIN, MNT),
                "exit %s, daemons %s" % (m.proc.poll(), h.find_daemon_pids(BIN, MNT)))
        os.stat(os.path.join(MNT, "file"))
        h.check("-d prints debug output on stderr", len(m.stderr().strip()) > 0)
    finally:
        h.unmount(m)


def test_relative_paths():
    errf = os.path.join(BASE, "rel.stderr")
    with open(errf, "wb") as ef:
        p = subprocess.Popen([BIN, "src", "mnt", "-o", "cache_dir=" + cache_dir()],
                             stdout=ef, stderr=ef, cwd=BASE, stdin=subprocess.DEVNULL)
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = "timeout"
        p.kill()
    try:
        h.eq("relative SOURCE and MOUNTPOINT: exit 0", rc, 0, h.read_file(errf)[-300:])
        h.check("relative paths: mounted at the absolute MOUNTPOINT", h.is_mounted(MNT))
        if h.is_mounted(MNT):
            h.eq("relative paths: the daemon (which left the cwd) serves SOURCE",
                 h.read_file(os.path.join(MNT, "file")), b"hello\n")
    finally:
        pids = h.find_daemon_pids(BIN, MNT)
        h.note_daemon_pids(pids)
        subprocess.run(["fusermount3", "-u", MNT], capture_output=True)
        for p in pids:
            if not h.wait_pid_gone(p, 10):
                os.kill(p, signal.SIGKILL)


def test_readonly():
    try:
        m = h.mount_efscache(SRC, MNT, "ro")
    except h.MountError as e:
        h.check("-o ro mounts", False, e)
        return
    try:
        f = os.path.join(MNT, "file")
        EROFS = 30
        cases = [
            ("open for writing", lambda: os.close(os.open(f, os.O_WRONLY))),
            ("create", lambda: os.close(os.open(os.path.join(MNT, "new"),
                                                os.O_CREAT | os.O_WRONLY, 0o644))),
            ("mkdir", lambda: os.mkdir(os.path.join(MNT, "newdir"))),
            ("unlink", lambda: os.unlink(f)),
            ("rmdir", lambda: os.rmdir(os.path.join(MNT, "sub"))),
            ("rename", lambda: os.rename(f, os.path.join(MNT, "moved"))),
            ("symlink", lambda: os.symlink("x", os.path.join(MNT, "l"))),
            ("link", lambda: os.link(f, os.path.join(MNT, "hl"))),
            ("chmod", lambda: os.chmod(f, 0o600)),
            ("chown", lambda: os.chown(f, 1, 1)),
            ("utime", lambda: os.utime(f, (1, 1))),
            ("truncate", lambda: os.truncate(f, 0)),
            ("setxattr", lambda: os.setxattr(f, "user.x", b"1")),
            ("removexattr", lambda: os.removexattr(f, "user.x")),
            ("mkfifo", lambda: os.mkfifo(os.path.join(MNT, "fifo"))),
        ]
        for name, fn in cases:
            e = h.errno_of(fn)
            h.check("-o ro: %s fails with EROFS" % name, e == EROFS, h.ename(e))
        h.eq("-o ro: reads work", h.read_file(f), b"hello\n")
        h.check("-o ro: SOURCE untouched", sorted(os.listdir(SRC)) == ["file", "sub"] and
                h.read_file(os.path.join(SRC, "file")) == b"hello\n" and
                (os.stat(os.path.join(SRC, "file")).st_mode & 0o777) == 0o644,
                os.listdir(SRC))
        h.check("-o ro: statvfs reports ST_RDONLY",
                os.statvfs(MNT).f_flag & os.ST_RDONLY, os.statvfs(MNT).f_flag)
    finally:
        h.unmount(m)


def fs_type(path):
    """The type of the file system mounted at path (mountinfo), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == path:
                return right.split()[0]
    return None


def test_cache_dir_in_ram_warns():
    """A cache_dir on tmpfs holds the cache in RAM (and goes at reboot): the daemon says so
    on stderr at start and serves anyway; on a disk it says nothing of the kind."""
    ram = tempfile.mkdtemp(prefix="efscache-cli-ram-")
    made = False
    if fs_type("/dev/shm") == "tmpfs":
        cdir = tempfile.mkdtemp(prefix="efscache-cli-cache-", dir="/dev/shm")
    elif os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "efs-test-ram", ram], check=True)
        made = True
        cdir = os.path.join(ram, "cache")
    else:
        print("# no tmpfs at /dev/shm and not root: the RAM warning is not checked")
        return
    try:
        disk = cache_dir()
        cases = [("tmpfs", cdir, True)]
        t = subprocess.run(["stat", "-f", "-c", "%T", os.path.dirname(disk)],
                           capture_output=True, text=True).stdout.strip()
        if t in ("tmpfs", "ramfs"):
            print("# the test's own temp dir is on %s: no case without the warning" % t)
        else:
            cases.append(("disk", disk, False))
        for where, opt_dir, want in cases:
            try:
                m = h.mount_efscache(SRC, MNT, "cache_dir=" + opt_dir, foreground=True)
            except h.MountError as e:
                h.check("cache_dir on %s: mounts" % where, False, e)
                continue
            try:
                h.eq("cache_dir on %s: serves" % where,
                     h.read_file(os.path.join(MNT, "file")), b"hello\n")
                err = m.stderr()
                said = "RAM" in err or "tmpfs" in err
                h.check("cache_dir on %s: %s" % (where, "stderr warns it is in RAM, naming it"
                                                 if want else "no RAM warning"),
                        said == want and (not want or opt_dir in err), err.strip()[-400:])
            finally:
                h.unmount(m)
    finally:
        if made:
            subprocess.run(["umount", "-l", ram], capture_output=True)
        else:
            shutil.rmtree(cdir, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)


h.run_tests([test_bad_option_values, test_bad_paths, test_good_values_mount,
             test_help_version, test_daemon_mode, test_signals, test_debug_flag, test_relative_paths,
             test_readonly, test_cache_dir_in_ram_warns])
