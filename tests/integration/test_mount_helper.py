#!/usr/bin/env python3
"""mount(8) integration through mount.fuse3 (package fuse3).

`mount -t fuse.efscache SRC MNT -o OPTS` makes mount(8) run `mount.fuse SRC MNT -o rw,OPTS
-t fuse.efscache`, which runs `efscache SRC MNT -o rw,OPTS,dev,suid` through /bin/sh.
util-linux's mount drops PATH from the helper's environment, so /bin/sh only finds an
`efscache` installed in the default PATH.  Hence:
  - mount.fuse3 SRC MNT -o ... -t fuse.efscache, with a temp dir holding an `efscache`
    symlink first in PATH (exactly the command mount(8) runs);
  - mount -t fuse 'BIN#SRC' MNT -o ... (mount.fuse's program#source form, full mount(8)
    path with the built binary) incl. ro/allow_other/efscache options and a bad option;
  - an fstab line via `mount -T FILE MNT`;
  - plain `mount -t fuse.efscache` only when efscache is installed in the default PATH;
and `umount MNT` for each, after which the daemon must exit."""

import os
import shutil
import subprocess

import harness as h  # noqa: E402

h.require_fuse()
if os.geteuid() != 0:
    h.skip("mount helper tests", "mount(8) with a fuse.* type needs root here")
    h.finish()
MOUNT = shutil.which("mount") or "/bin/mount"
if not (os.path.exists("/sbin/mount.fuse3") or os.path.exists("/usr/sbin/mount.fuse3")
        or shutil.which("mount.fuse3")):
    h.check("mount.fuse3 is installed (package fuse3)", False, "not found")
    h.finish()

BASE = h.tmpdir()
SRC = os.path.join(BASE, "src")
BIN = os.path.join(BASE, "bin")
h.mkdirs(SRC, BIN)
os.symlink(h.EFSCACHE_BIN, os.path.join(BIN, "efscache"))
h.write_file(os.path.join(SRC, "file"), b"via mount helper\n")
os.mkdir(os.path.join(SRC, "dir"))
os.symlink("file", os.path.join(SRC, "link"))
ENV = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
_n = [0]


def newmnt():
    _n[0] += 1
    mnt = os.path.join(BASE, "mnt-%d" % _n[0])
    os.mkdir(mnt)
    return mnt, os.path.join(BASE, "cache-%d" % _n[0])


def run(args, timeout=30):
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        return "timeout", str(e)


def mounted_ok(name, mnt, rc, out):
    h.eq("%s: mount exits 0" % name, rc, 0, out)
    ok = h.check("%s: an efscache FUSE mount appears in mountinfo" % name, h.is_mounted(mnt),
                 out)
    m = h.adopt_mount("efscache", h.EFSCACHE_BIN, SRC, mnt)
    if ok:
        h.check("%s: a daemon process serves it" % name, bool(m.daemon_pids()))
        h.compare_tree("%s: the tree equals SOURCE" % name, mnt, SRC)
    return m, ok


def umount_ok(name, m):
    pids = m.daemon_pids()
    rc, out = run(["umount", m.mnt])
    h.eq("%s: umount MNT exits 0" % name, rc, 0, out)
    h.check("%s: unmounted" % name, not h.is_mounted(m.mnt))
    h.check("%s: the daemon exits after umount" % name,
            all(h.wait_pid_gone(p, 10) for p in pids), pids)
    probs = m.umount()
    h.check("%s: nothing left to clean up" % name, not probs, probs)


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HASH_SRC = h.EFSCACHE_BIN + "#" + SRC


def check_writes(name, mnt):
    with open(os.path.join(mnt, "written"), "wb") as f:
        f.write(b"write through helper mount")
    h.eq("%s: writes reach SOURCE" % name, h.read_file(os.path.join(SRC, "written")),
         b"write through helper mount")
    os.unlink(os.path.join(mnt, "written"))


def test_mount_fuse3_helper():
    name = "mount.fuse3 SRC MNT -t fuse.efscache (efscache from PATH)"
    mnt, cd = newmnt()
    helper = shutil.which("mount.fuse3", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    rc, out = run([helper, SRC, mnt, "-o", "cache_dir=" + cd, "-t", "fuse.efscache"])
    m, ok = mounted_ok(name, mnt, rc, out)
    if ok:
        check_writes(name, mnt)
    umount_ok(name, m)


def test_mount_program_hash_source():
    name = "mount -t fuse 'BIN#SRC' MNT"
    mnt, cd = newmnt()
    rc, out = run([MOUNT, "-t", "fuse", HASH_SRC, mnt, "-o", "cache_dir=" + cd])
    m, ok = mounted_ok(name, mnt, rc, out)
    if ok:
        check_writes(name, mnt)
    umount_ok(name, m)


def test_mount_options():
    name = "mount -t fuse 'BIN#SRC' MNT -o ro,allow_other,ttl=never,..."
    mnt, cd = newmnt()
    rc, out = run([MOUNT, "-t", "fuse", HASH_SRC, mnt, "-o",
                   "ro,allow_other,ttl=never,chunk_size=1M,prefetch=2,cache_size=1G,"
                   "verify=always,cache_dir=" + cd])
    m, ok = mounted_ok(name, mnt, rc, out)
    if ok:
        e = h.errno_of(lambda: open(os.path.join(mnt, "new"), "wb").close())
        h.check("mount -o ro through the helper: create fails with EROFS", e == 30, h.ename(e))
        h.check("mount -o allow_other through the helper: mountinfo shows allow_other",
                "allow_other" in (m.info or {}).get("superopts", ""), m.info)
    umount_ok(name, m)


def test_mount_bad_option():
    mnt, cd = newmnt()
    rc, out = run([MOUNT, "-t", "fuse", HASH_SRC, mnt, "-o", "cache_size=10X,cache_dir=" + cd])
    h.check("mount -o cache_size=10X through the helper: non-zero exit",
            rc != 0 and rc != "timeout", (rc, out))
    h.check("mount -o cache_size=10X through the helper: the error names option and value",
            "cache_size" in out and "10X" in out, out)
    h.check("mount -o cache_size=10X through the helper: nothing mounted",
            not h.is_mounted(mnt))
    if h.is_mounted(mnt):
        h.adopt_mount("efscache", h.EFSCACHE_BIN, SRC, mnt)


def test_fstab():
    name = "fstab line via mount -T FILE MNT"
    mnt, cd = newmnt()
    fstab = os.path.join(BASE, "fstab")
    with open(fstab, "w") as f:
        f.write("# test fstab\n")
        # The options README and efscache(1) give for fstab: _netdev (a network file
        # system: systemd orders it after the network) and x-systemd.requires-mounts-for
        # (after SOURCE's own mount); neither may reach efscache as an unknown option.
        f.write("%s %s fuse noauto,cache_dir=%s,ttl=0,_netdev,nofail,"
                "x-systemd.requires-mounts-for=%s 0 0\n" % (HASH_SRC, mnt, cd, SRC))
    rc, out = run([MOUNT, "-T", fstab, mnt])
    m, ok = mounted_ok(name, mnt, rc, out)
    umount_ok(name, m)


def test_mount_t_installed():
    found = shutil.which("efscache", path=DEFAULT_PATH)
    if not found:
        h.skip("mount -t fuse.efscache SRC MNT",
               "no efscache in %s (mount(8) clears PATH for helpers)" % DEFAULT_PATH)
        return
    name = "mount -t fuse.efscache SRC MNT (installed %s)" % found
    mnt, cd = newmnt()
    rc, out = run([MOUNT, "-t", "fuse.efscache", SRC, mnt, "-o", "cache_dir=" + cd])
    m, ok = mounted_ok(name, mnt, rc, out)
    m.binary = found
    umount_ok(name, m)


h.run_tests([test_mount_fuse3_helper, test_mount_program_hash_source, test_mount_options,
             test_mount_bad_option, test_fstab, test_mount_t_installed])
