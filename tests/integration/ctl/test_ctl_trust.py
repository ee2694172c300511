"""efscachectl trusts only an efscache mount and its own socket (issue 15, L11).

efscachectl is often run by root (sudo) on a path a user named.  It finds the daemon
through the stats xattr of that path, and any file system can serve such an xattr: a file
in a user's directory, a user's own FUSE mount.  Before the fix it connected to whatever
`cache_dir/ctl.sock` that xattr named.  Now it first checks that the path is on a FUSE
mount of type fuse.efscache, and that cache_dir is owned by root or the mount's owner,
writable by no one else, and holds a socket owned by one of them.

Each case forges or spoils one of those and checks that efscachectl (as root) refuses with
a message naming the path, and never connects: a listening socket of our own is the
witness (it must accept nothing)."""

import mmap
import os
import pwd
import socket
import threading
import time

import test_ctl as tc

h = tc.h
try:
    NOBODY = pwd.getpwnam("nobody")
    UID, GID = NOBODY.pw_uid, NOBODY.pw_gid
except KeyError:
    UID, GID = 65534, 65534


class Listener:
    """A Unix socket at DIR/ctl.sock that counts the connections it accepts."""

    def __init__(self, d):
        self.path = os.path.join(d, "ctl.sock")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(self.path)
        self.s.listen(8)
        self.s.settimeout(0.2)
        self.accepted = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.s.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            c.close()

    def close(self):
        self.stop = True
        self.t.join(5)
        self.s.close()


def forged_stats(cache_dir):
    """The stats text of the real mount, naming another cache_dir."""
    text = os.getxattr(tc.S["mnt"], "user.efscache.stats").decode()
    lines = [("cache_dir " + cache_dir) if ln.startswith("cache_dir ") else ln
             for ln in text.splitlines()]
    return ("\n".join(lines) + "\n").encode()


def forge(path, cache_dir):
    """Both query xattrs of the real mount on path, the stats naming cache_dir."""
    os.setxattr(path, "user.efscache.stats", forged_stats(cache_dir))
    os.setxattr(path, "user.efscache.status", os.getxattr(tc.mpath("big"),
                                                          "user.efscache.status"))


def users_fake(base):
    """A cache_dir of nobody's, with a socket of nobody's listening in it."""
    fake = os.path.join(base, "fake-cache")
    os.mkdir(fake, 0o700)
    lis = Listener(fake)
    os.chown(fake, UID, GID)
    os.chown(lis.path, UID, GID)
    return fake, lis


def refused(name, r, path, lis, words):
    h.check("%s: efscachectl refuses (rc 1), naming the path and why" % name,
            r.rc == 1 and path in r.err and all(w in r.err for w in words), r)
    if lis is not None:
        h.eq("%s: ... and never connected to the socket it was pointed at" % name,
             lis.accepted, 0)


def test_xattr_on_a_plain_file():
    base = tc.S["base"]
    fake, lis = users_fake(base)
    bait = os.path.join(base, "bait")
    h.write_file(bait, b"x")
    forge(bait, fake)
    try:
        for cmd in (("evict", bait), ("verify", bait)):
            r = tc.ctl(*cmd)
            refused("%s of a plain file forging the stats xattr" % cmd[0], r, bait, lis,
                    ["not on an efscache mount"])
    finally:
        lis.close()


def test_xattr_on_another_fuse_mount():
    """efs-emu is a FUSE mount too (and passes user xattrs to its source)."""
    fake = os.path.join(tc.S["base"], "fake-cache2")
    os.mkdir(fake, 0o700)
    lis = Listener(fake)
    bait = os.path.join(tc.S["src"], "bait")
    h.write_file(bait, b"x")
    forge(bait, fake)
    try:
        r = tc.ctl("evict", os.path.join(tc.S["emu"], "bait"))
        refused("evict on another FUSE file system", r, os.path.join(tc.S["emu"], "bait"), lis,
                ["not on an efscache mount", "fuse"])
    finally:
        lis.close()


def cached_big():
    """Read big (O_DIRECT: past the page cache, so the daemon caches it again after an
    evict); its cached bytes once written."""
    fd = os.open(tc.mpath("big"), os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    try:
        os.preadv(fd, [buf], 0)
    finally:
        buf.close()
        os.close(fd)
    for _ in range(100):
        if not tc.raw_stats()["write_behind_pending"]:
            break
        time.sleep(0.05)
    return tc.status_of(tc.mpath("big"))["cached_bytes"]


def test_socket_not_ours():
    """The real mount, its socket given to another user (as if replaced by one)."""
    sock = os.path.join(tc.S["cache"], "ctl.sock")
    big = tc.mpath("big")
    before = cached_big()
    os.chown(sock, UID, GID)
    try:
        refused("socket owned by another user", tc.ctl("evict", big), big, None,
                ["ctl.sock", "uid"])
    finally:
        os.chown(sock, 0, 0)
    h.check("... nothing evicted", before > 0 and tc.status_of(big)["cached_bytes"] == before,
            before)
    h.check("socket back to root: evict works again", tc.ctl("evict", big).rc == 0)


def test_cache_dir_open_to_others():
    cache = tc.S["cache"]
    big = tc.mpath("big")
    before = cached_big()
    os.chmod(cache, 0o777)
    try:
        refused("cache_dir writable by others", tc.ctl("evict", big), big, None,
                ["writable by no one else", "0777"])
    finally:
        os.chmod(cache, 0o700)
    h.check("... nothing evicted", before > 0 and tc.status_of(big)["cached_bytes"] == before,
            before)
    h.check("cache_dir private again: evict works", tc.ctl("evict", big).rc == 0)


def setup():
    base = h.tmpdir("efscache-ctltrust-")
    src, emu, mnt, cache = (os.path.join(base, d) for d in ("src", "emu", "mnt", "cache"))
    h.mkdirs(src, emu, mnt)
    os.chmod(base, 0o755)
    h.make_random_file(os.path.join(src, "big"), 1 << 20, seed=3)
    m_emu = h.mount_emu(src, emu, *tc.EMU_OPTS)
    m = h.mount_efscache(emu, mnt, cache_dir=cache)
    tc.S.update(base=base, src=src, emu=emu, mnt=mnt, cache=cache, m_emu=m_emu, m=m)


def main():
    h.require_fuse()
    if not tc.CTL or not os.path.exists(tc.CTL):
        h.check("efscachectl binary exists", False, "EFSCACHECTL_BIN=%r" % tc.CTL)
        h.finish()
    if os.geteuid() != 0:
        h.skip("control trust", "needs root to give files to nobody")
        h.finish()
    setup()
    h.run_tests([test_xattr_on_a_plain_file, test_xattr_on_another_fuse_mount,
                 test_socket_not_ours, test_cache_dir_open_to_others])


if __name__ == "__main__":
    main()
