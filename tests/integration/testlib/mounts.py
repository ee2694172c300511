"""Mounts of efscache and efs-emu made by a test, and the daemons behind them.

Contract:
- EFSCACHE_BIN / EFS_EMU_BIN come from the environment (meson sets them) or the usual
  build directories; require_fuse() exits 77 only when /dev/fuse is missing or cannot be
  opened, fails when the efscache binary is missing, and starts the watchdog.
- mount_efscache()/mount_emu() return a Mount once the new FUSE mount shows in
  /proc/self/mountinfo, or raise MountError with the command and the daemon's stderr.
  Each daemon's stderr goes to a file in a per-script log dir; every daemon PID is noted
  for the sanitizer-report check.  A fresh cache_dir is added unless one is given.
  EFSCACHE_WRAPPER (environment, word-split) prefixes the efscache daemons' command line.
- Daemons are found and signalled by PID (binary + our unique mountpoint), never by name.
- Mount.umount() unmounts (lazily if busy), waits for the daemon, then SIGTERM/SIGKILL by
  PID, and returns the list of problems; cleanup (stage 20) unmounts every Mount still
  mounted, innermost (latest) first; the watchdog SIGKILLs their daemons.
- emu_stats()/emu_reset(): efs-emu's counters (user.efsemu.stats), the independent witness
  of what efscache fetched from the "EFS" side.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

from .checks import (_emit, check, finish, note_daemon_pids, note_stderr_file, on_cleanup,
                     on_watchdog, start_watchdog)
from .mountinfo import canon, fuse_mounts_at
from .trees import mkdirs, tmpdir

__all__ = ["SRC_DIR", "EFSCACHE_BIN", "EFS_EMU_BIN", "EFSCACHE_WRAPPER", "require_fuse", "find_daemon_pids",
           "wait_pid_gone", "sanitizer_of", "MountError", "Mount", "mount_efscache", "mount_emu",
           "adopt_mount", "unmount", "setup", "emu_stats", "emu_reset"]

_HERE = os.path.dirname(os.path.abspath(__file__))  # tests/integration/testlib
SRC_DIR = os.environ.get("EFSCACHE_SRC_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(_HERE)))


def _find_bin(envname, relpaths):
    v = os.environ.get(envname)
    if v:
        return os.path.abspath(v)
    dirs = []
    if os.environ.get("EFSCACHE_BUILD_DIR"):
        dirs.append(os.environ["EFSCACHE_BUILD_DIR"])
    dirs += [os.path.join(SRC_DIR, d) for d in ("build-it", "build")]
    for d in dirs:
        for r in relpaths:
            p = os.path.join(d, r)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return os.path.abspath(p)
    return None


EFSCACHE_BIN = _find_bin("EFSCACHE_BIN", ["src/efscache"])
EFS_EMU_BIN = _find_bin("EFS_EMU_BIN", ["tests/emu/efs-emu"])
# A command that efscache daemons started by mount_efscache() run under, e.g.
# "valgrind --log-file=DIR/vg.%p" (tests/race.sh).  Such a daemon's /proc/PID/exe is the
# wrapper's, so find_daemon_pids() then also accepts the binary among the arguments, and
# the daemon gets more time to exit after its unmount.
EFSCACHE_WRAPPER = shlex.split(os.environ.get("EFSCACHE_WRAPPER", ""))
EXIT_TIMEOUT = 120 if EFSCACHE_WRAPPER else 10
# A sanitizer build's daemon exits slower (LeakSanitizer stops every thread and scans the
# heap at exit), and much slower on a loaded 2-core machine.
SANITIZER_EXIT_TIMEOUT = 30


def sanitizer_of(pid):
    """"asan" or "tsan" if pid runs with that sanitizer (its runtime is mapped), else
    None (no sanitizer, or no such process)."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
    except (OSError, TypeError):
        return None
    return "asan" if "libasan" in maps else "tsan" if "libtsan" in maps else None


def _thread_stacks(pid):
    """Every thread's stack of pid (gdb), the tail of it, or '' without gdb: where a daemon
    that would not exit was waiting, in its own functions."""
    try:
        r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(pid), "-ex",
                            "thread apply all bt 25"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [x for x in r.stdout.splitlines() if x.startswith(("#", "Thread"))]
    return "\n".join(lines)[-6000:]


def _thread_states(pid):
    """'TID:STATE:WCHAN ...' of pid's threads, to say where a daemon that would not exit
    was waiting."""
    out = []
    try:
        for tid in sorted(os.listdir("/proc/%d/task" % pid), key=int):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open("/proc/%d/task/%s/wchan" % (pid, tid)) as f:
                    wchan = f.read().strip() or "-"
            except OSError:
                continue
            out.append("%s:%s:%s" % (tid, state, wchan))
    except OSError:
        pass
    return " ".join(out)


def require_fuse():
    """Exit 77 (meson's "skipped") only when /dev/fuse is missing or cannot be opened."""
    if not os.path.exists("/dev/fuse"):
        _emit("# SKIP: /dev/fuse does not exist")
        sys.exit(77)
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        _emit("# SKIP: cannot open /dev/fuse: %s" % e)
        sys.exit(77)
    if not EFSCACHE_BIN or not os.path.exists(EFSCACHE_BIN):
        check("efscache binary exists", False, "EFSCACHE_BIN=%r not found" % EFSCACHE_BIN)
        finish()
    start_watchdog()


def _pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    state = st[st.rindex(")") + 2:].split()[0]
    return state not in ("Z", "X")


def find_daemon_pids(binary, mountpoint):
    """PIDs of processes running `binary` with `mountpoint` among their arguments.  Used to
    find the daemon that a non -f efscache forked off (the process we started exits once
    mounted).  The mountpoint is a unique temp path, so this only finds our own daemons."""
    res = []
    if not binary:
        return res
    want = os.path.realpath(binary)
    mp = canon(mountpoint)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == os.getpid():
            continue
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if exe.endswith(" (deleted)"):
            exe = exe[:-10]
        sargs = [a.decode(errors="replace") for a in args]
        if exe != want and not (EFSCACHE_WRAPPER and (want in sargs or binary in sargs)):
            continue  # /proc/PID/exe is already resolved
        if mountpoint in sargs or mp in sargs or any(
                a.startswith("/") and canon(a) == mp for a in sargs):
            if _pid_alive(pid):
                res.append(pid)
    return res


def wait_pid_gone(pid, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------
# mounts

class MountError(Exception):
    pass


_mounts = []  # every Mount we made, for cleanup
_counter = [0]


class Mount:
    """A FUSE mount made by us: efscache or efs-emu."""

    def __init__(self, kind, binary, src, mnt, args, proc, stderr_path, foreground):
        self.kind = kind
        self.binary = binary
        self.src = src
        self.mnt = canon(mnt)
        self.args = args
        self.proc = proc
        self.stderr_path = stderr_path
        self.foreground = foreground
        self.pids = [proc.pid] if foreground and proc is not None else []
        self.exit_code = None
        self.mounted = False
        self.problems = []

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def daemon_pids(self):
        if self.foreground:
            return [self.proc.pid] if self.proc.poll() is None else []
        pids = [p for p in self.pids if _pid_alive(p)]
        for p in find_daemon_pids(self.binary, self.mnt):
            if p not in pids:
                pids.append(p)
            note_daemon_pids([p])
        return pids

    def umount(self, timeout=None):
        """fusermount3 -u (lazy -z if busy), wait for the daemon to exit, then SIGTERM and
        SIGKILL it by PID if it did not.  Returns a list of problems (empty when clean)."""
        problems = []
        if not self.foreground and not self.pids:
            self.pids = find_daemon_pids(self.binary, self.mnt)
        if timeout is None:
            timeout = EXIT_TIMEOUT
            if any(sanitizer_of(p) for p in self.daemon_pids()):
                timeout = max(timeout, SANITIZER_EXIT_TIMEOUT)
        if fuse_mounts_at(self.mnt):
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                problems.append("fusermount3 -u failed: %s" % r.stderr.strip())
                subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True,
                               timeout=30)
        # wait for the daemon(s) to exit on their own
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.daemon_pids():
            time.sleep(0.02)
        left = self.daemon_pids()
        if left:
            problems.append("daemon pid(s) %s still running %ds after unmount; killed; its "
                            "threads (tid:state:wchan) were: %s\n%s"
                            % (left, timeout, "; ".join(_thread_states(p) for p in left),
                               "\n".join(_thread_stacks(p) for p in left)))
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for p in left:
                    try:
                        os.kill(p, sig)
                    except ProcessLookupError:
                        pass
                time.sleep(0.5)
                left = self.daemon_pids()
                if not left:
                    break
        if self.proc is None:
            pass
        elif self.foreground:
            try:
                self.exit_code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_code = self.proc.wait()
        else:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if fuse_mounts_at(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True,
                           timeout=30)
            if fuse_mounts_at(self.mnt):
                problems.append("still mounted after lazy unmount")
        self.mounted = False
        if self in _mounts:
            _mounts.remove(self)
        self.problems = problems
        return problems

    def kill9(self):
        """SIGKILL the daemon (aborts the FUSE connection), used by the watchdog."""
        for p in self.daemon_pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        probs = self.umount()
        check("unmount %s cleanly" % self.mnt, not probs, "; ".join(probs))
        return False


def _launch(kind, binary, src, mnt, opts, foreground, extra_args, env, timeout, logdir):
    if not binary or not os.path.exists(binary):
        raise MountError("%s binary not found (%r)" % (kind, binary))
    os.makedirs(mnt, exist_ok=True)
    mnt = os.path.realpath(mnt)
    before = {m["id"] for m in fuse_mounts_at(mnt)}
    args = [binary, src, mnt]
    if kind == "efscache" and EFSCACHE_WRAPPER:
        args = EFSCACHE_WRAPPER + args
        timeout = max(timeout, 120)  # valgrind starts slowly
    if "-d" in extra_args:
        foreground = True  # -d implies -f
    elif foreground:
        args.append("-f")
    args += list(extra_args)
    if opts:
        args += ["-o", ",".join(opts)]
    _counter[0] += 1
    stderr_path = os.path.join(logdir, "%s-%d.stderr" % (kind, _counter[0]))
    errf = open(stderr_path, "wb")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                            env=env, start_new_session=True)
    errf.close()
    m = Mount(kind, binary, src, mnt, args, proc, stderr_path, foreground)
    _mounts.append(m)
    note_daemon_pids([proc.pid])
    note_stderr_file(stderr_path)
    deadline = time.monotonic() + timeout
    while True:
        new = [x for x in fuse_mounts_at(mnt) if x["id"] not in before]
        if new:
            m.mounted = True
            m.info = new[-1]
            break
        rc = proc.poll()
        if rc is not None and (foreground or rc != 0):
            m.umount()
            raise MountError("%s exited with %s before mounting %s\ncommand: %s\nstderr:\n%s"
                             % (kind, rc, mnt, " ".join(args), m.stderr()))
        if time.monotonic() > deadline:
            m.umount()
            raise MountError("%s did not mount %s within %ss\ncommand: %s\nstderr:\n%s"
                             % (kind, mnt, timeout, " ".join(args), m.stderr()))
        time.sleep(0.01)
    if not foreground:
        # the launcher returns once mounted; give it a moment and remember the daemon
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        m.pids = find_daemon_pids(binary, mnt)
        note_daemon_pids(m.pids)
    return m


def wait_index_ready(mnt, timeout=60):
    """Wait until the daemon's startup index of cache_dir is complete (the stats line
    cache_index_ready 1): until then it stores no chunk, so a test that reads right after
    a restart and expects the next read from the cache waits for it first.  False if the
    stats cannot be read (the mount is not efscache's, or is gone) or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = os.getxattr(mnt, "user.efscache.stats").decode()
        except OSError:
            return False
        if "\ncache_index_ready 1\n" in "\n" + text:
            return True
        time.sleep(0.01)
    return False


def mount_efscache(src, mnt, *opts, foreground=False, cache_dir=None, extra_args=(),
                   env=None, timeout=15, wait_index=True):
    """Mount efscache SRC at MNT (created if needed) with -o OPTS; waits until the mount is
    in /proc/self/mountinfo and (wait_index) its startup index of cache_dir is complete.
    A cache_dir in a fresh temp dir is added unless one is given in opts or as
    cache_dir=.  Raises MountError with the daemon's stderr on failure."""
    opts = list(opts)
    logdir = _logdir()
    if not any(o.startswith("cache_dir=") for o in opts):
        if cache_dir is None:
            cache_dir = os.path.join(logdir, "cache-%d" % (_counter[0] + 1))
        opts.insert(0, "cache_dir=" + cache_dir)
    m = _launch("efscache", EFSCACHE_BIN, src, mnt, opts, foreground, extra_args, env,
                timeout, logdir)
    if wait_index:
        wait_index_ready(m.mnt, timeout=max(timeout, 60))
    return m


def mount_emu(src, mnt, *opts, foreground=False, extra_args=(), env=None, timeout=15):
    """Mount the EFS emulator (efs-emu SRC MNT -o OPTS)."""
    return _launch("efs-emu", EFS_EMU_BIN, src, mnt, list(opts), foreground, extra_args, env,
                   timeout, _logdir())


_logdir_path = []


def _logdir():
    if not _logdir_path:
        _logdir_path.append(tmpdir("efscache-it-logs-"))
    return _logdir_path[0]


def adopt_mount(kind, binary, src, mnt):
    """Track a mount made by someone else (mount(8) via mount.fuse3) so that cleanup
    unmounts it and stops its daemon (found by binary and mountpoint)."""
    m = Mount(kind, binary, src, mnt, [], None, os.devnull, False)
    m.pids = find_daemon_pids(binary, m.mnt)
    note_daemon_pids(m.pids)
    found = fuse_mounts_at(m.mnt)
    m.mounted = bool(found)
    m.info = found[-1] if found else None
    _mounts.append(m)
    return m


def unmount(m):
    probs = m.umount()
    check("unmount %s (%s) cleanly" % (m.mnt, m.kind), not probs, "; ".join(probs))
    return not probs


def setup(*opts, name="efscache", **kw):
    """base temp dir with src/ (0755) and a mounted efscache at mnt/; returns (base, src, m)."""
    base = tmpdir()
    src = os.path.join(base, "src")
    mkdirs(src)
    m = mount_efscache(src, os.path.join(base, "mnt"), *opts, **kw)
    return base, src, m


# ---------------------------------------------------------------------------------------
# efs-emu counters

def emu_stats(path):
    """Counters of an efs-emu mount (path = its root) or of one file in it."""
    raw = os.getxattr(path, "user.efsemu.stats")
    res = {}
    for tok in raw.decode().split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                res[k] = int(v)
            except ValueError:
                try:
                    res[k] = float(v)
                except ValueError:
                    res[k] = v
    return res


def emu_reset(root):
    os.setxattr(root, "user.efsemu.reset", b"1")


def _unmount_all():
    # efscache mounts over emu mounts: unmount in reverse order of creation
    for m in reversed(list(_mounts)):
        try:
            probs = m.umount()
            if probs:
                check("cleanup: unmount %s (%s)" % (m.mnt, m.kind), False, "; ".join(probs))
        except Exception as e:  # noqa: BLE001
            check("cleanup: unmount %s" % m.mnt, False, repr(e))


def _kill_all():
    for m in list(_mounts):
        m.kill9()


on_cleanup(20, _unmount_all)
on_watchdog(_kill_all)
