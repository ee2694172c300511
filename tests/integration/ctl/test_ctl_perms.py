"""Other users cannot disturb the cache (DESIGN rule 15): on an allow_other mount run by
root, `nobody` may query (stats, status) but not act (evict, verify): efscachectl exits 1
with "Operation not permitted", the path and what to do, and the cache is untouched, as
efscache's own counters witness (chunks_verified, the file's cached_bytes).  The old
getxattr forms of evict and verify are gone (ENODATA, no side effect) and setxattr of a
reserved name is EPERM, for root too.  The daemon's SO_PEERCRED check refuses a stranger
even when the socket's directory has been opened up.  Root can act; a verify shows
progress on a TTY and always prints its totals.

Stack: SOURCE dir --efs-emu--> emu mount --efscache (allow_other)--> mount.
"""

import errno
import os
import pwd
import re
import subprocess

import test_ctl as tc  # ctl(), ctl_tty(), raw_stats(), status_of(), h

h = tc.h
MiB = 1 << 20
try:
    NOBODY = pwd.getpwnam("nobody")
    UID, GID = NOBODY.pw_uid, NOBODY.pw_gid
except KeyError:
    UID, GID = 65534, 65534
S = tc.S
DENIED = "Operation not permitted: only root and the mount's owner (uid 0) may"


def ctl_as_nobody(*args, timeout=120):
    p = subprocess.run([tc.CTL] + list(args), capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, user=UID, group=GID,
                       extra_groups=[], cwd="/")
    return tc.Run(args, p.returncode, p.stdout, p.stderr)


def counters():
    return tc.raw_stats()


def setup():
    base = h.tmpdir("efscache-ctlperm-")
    src, emu, mnt, cache = (os.path.join(base, d) for d in ("src", "emu", "mnt", "cache"))
    h.mkdirs(src, emu, mnt)
    for i in range(20):
        d = os.path.join(src, "tree", "d%d" % (i % 3))
        os.makedirs(d, exist_ok=True)
        h.make_random_file(os.path.join(d, "f%02d" % i), 1 + i * 3001, seed=i + 1)
    h.make_random_file(os.path.join(src, "big"), 8 * MiB, seed=9)
    os.chmod(os.path.join(src, "big"), 0o644)
    m_emu = h.mount_emu(src, emu, *tc.EMU_OPTS)
    m = h.mount_efscache(emu, mnt, "allow_other", cache_dir=cache)
    S.update(base=base, src=src, emu=emu, mnt=mnt, cache=cache, m_emu=m_emu, m=m)
    h.eq("warm as root: rc 0", tc.ctl("warm", tc.mpath("big"), tc.mpath("tree")).rc, 0)
    # warm waits for the write-behind: what it read is in cache_dir when it returns, so the
    # usage compared below cannot grow under the test
    h.eq("warm returned with no chunk left to write", tc.raw_stats()["write_behind_pending"], 0)


def test_nobody_cannot_act():
    big = tc.mpath("big")
    before = tc.status_of(big)["cached_bytes"]
    c0 = counters()
    h.check("big is cached", before > 0, before)

    r = ctl_as_nobody("evict", big)
    h.check("nobody: evict FILE: rc 1, EPERM text names the path and what to do",
            r.rc == 1 and DENIED in r.err and big in r.err and "sudo" in r.err, r)
    r = ctl_as_nobody("evict", tc.mpath("tree"))
    h.check("nobody: evict DIR: rc 1, said once", r.rc == 1 and r.err.count(DENIED) == 1, r)
    h.eq("nobody: evict: big's cached bytes unchanged", tc.status_of(big)["cached_bytes"],
         before)
    r = ctl_as_nobody("verify", S["mnt"])
    h.check("nobody: verify MNT: rc 1, EPERM text names the mount",
            r.rc == 1 and DENIED in r.err and S["mnt"] in r.err, r)
    c1 = counters()
    for k in ("chunks_verified", "evictions", "checksum_mismatches", "cache_usage_bytes"):
        h.eq("nobody: %s unchanged" % k, c1[k], c0[k])

    r = ctl_as_nobody("stats", S["mnt"])
    h.check("nobody: stats: rc 0", r.rc == 0 and "cache_usage_bytes" in r.out, r)
    r = ctl_as_nobody("status", big)
    h.check("nobody: status: rc 0", r.rc == 0 and "big" in r.out, r)
    h.eq("nobody: queries changed nothing: chunks_verified",
         counters()["chunks_verified"], c0["chunks_verified"])


def test_old_xattrs_gone():
    big = tc.mpath("big")
    before = tc.status_of(big)["cached_bytes"]
    c0 = counters()
    for name in ("user.efscache.verify", "user.efscache.evict"):
        for path in (big, S["mnt"]):
            got = h.as_user(UID, GID, lambda _d, p, n: os.getxattr(p, n), path, name)
            h.eq("nobody: getxattr %s on %s: ENODATA" % (name, os.path.basename(path)),
                 got, ("errno", errno.ENODATA))
            h.eq("root: getxattr %s: ENODATA" % name,
                 h.errno_of(os.getxattr, path, name), errno.ENODATA)
    h.eq("root: setxattr user.efscache.evict: EPERM",
         h.errno_of(os.setxattr, big, "user.efscache.evict", b"1"), errno.EPERM)
    got = h.as_user(UID, GID, lambda _d, p: os.setxattr(p, "user.efscache.evict", b"1"), big)
    h.check("nobody: setxattr user.efscache.evict fails", got[0] == "errno", got)
    c1 = counters()
    h.eq("old names: chunks_verified unchanged", c1["chunks_verified"], c0["chunks_verified"])
    h.eq("old names: big's cached bytes unchanged", tc.status_of(big)["cached_bytes"], before)
    h.check("listxattr shows none of ours",
            not any(n.startswith("user.efscache.") for n in os.listxattr(big)))


def test_status_no_side_effect():
    """A status query of files never read makes no cache entries (they live until the
    daemon exits: a query of a big tree would grow the daemon for good)."""
    d = os.path.join(S["src"], "fresh")
    os.makedirs(d, exist_ok=True)
    for i in range(30):
        h.write_file(os.path.join(d, "n%02d" % i), b"x" * (100 + i))
    # Listed first: a listing keeps the directory's index (one record, like a file's), which
    # is the listing's doing, not the status query's.
    os.listdir(tc.mpath("fresh"))
    e0 = counters()["cache_entries"]
    r = ctl_as_nobody("status", tc.mpath("fresh"))
    h.check("nobody: status of 30 unread files: rc 0, all uncached",
            r.rc == 0 and r.out.count("uncached") == 30, r)
    r = tc.ctl("status", tc.mpath("fresh"))
    h.eq("root: status of the same: rc 0", r.rc, 0)
    h.eq("status made no cache entries", counters()["cache_entries"], e0)


def test_peercred():
    """Open the directory and the socket to everyone: the daemon still refuses nobody."""
    sock = os.path.join(S["cache"], "ctl.sock")
    c0 = counters()
    os.chmod(S["cache"], 0o711)
    os.chmod(sock, 0o666)
    try:
        r = ctl_as_nobody("verify", S["mnt"])
        h.check("socket opened up: nobody's verify still refused by SO_PEERCRED",
                r.rc == 1 and DENIED in r.err, r)
        r = ctl_as_nobody("evict", tc.mpath("big"))
        h.check("socket opened up: nobody's evict still refused",
                r.rc == 1 and DENIED in r.err, r)
    finally:
        os.chmod(S["cache"], 0o700)
        os.chmod(sock, 0o600)
    h.eq("socket opened up: chunks_verified unchanged", counters()["chunks_verified"],
         c0["chunks_verified"])


def test_root_acts():
    big = tc.mpath("big")
    c0 = counters()
    rc, out = tc.ctl_tty("verify", S["mnt"])
    h.check("root: verify on a TTY: rc 0, a progress line, then the totals",
            rc == 0 and re.search(r"verify: \d+/\d+ chunks", out)
            and re.search(r"chunks checked\s+[1-9]", out), out)
    r = tc.ctl("verify", S["mnt"])
    h.check("root: verify, not a TTY: no progress line, totals",
            r.rc == 0 and "verify:" not in r.err and re.search(r"^chunks bad\s+0$", r.out, re.M),
            r)
    c1 = counters()
    h.check("root: verify re-hashed chunks", c1["chunks_verified"] > c0["chunks_verified"],
            (c0["chunks_verified"], c1["chunks_verified"]))
    r = tc.ctl("evict", big)
    h.check("root: evict: rc 0, dropped", r.rc == 0 and "dropped" in r.out, r)
    h.eq("root: evict: nothing cached", tc.status_of(big)["cached_bytes"], 0)


def test_socket_is_private():
    st = os.lstat(os.path.join(S["cache"], "ctl.sock"))
    h.eq("ctl.sock mode 0600", st.st_mode & 0o777, 0o600)
    h.eq("ctl.sock owned by the daemon's user", st.st_uid, os.geteuid())
    h.eq("cache_dir mode 0700", os.stat(S["cache"]).st_mode & 0o777, 0o700)


def main():
    h.require_fuse()
    if not tc.CTL or not os.path.exists(tc.CTL):
        h.check("efscachectl binary exists", False, "EFSCACHECTL_BIN=%r" % tc.CTL)
        h.finish()
    if os.geteuid() != 0:
        h.skip("control permissions", "needs root to run as nobody")
        h.finish()
    setup()
    h.run_tests([test_socket_is_private, test_nobody_cannot_act, test_old_xattrs_gone,
                 test_status_no_side_effect, test_peercred, test_root_acts])


if __name__ == "__main__":
    main()
