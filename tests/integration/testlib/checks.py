"""The check/report API and the life of a test script: checks, the exit status, cleanup.

Contract:
- check()/eq()/check_errno() print one "ok - NAME" or "not ok - NAME: DETAIL" line each
  (thread-safe) and return the condition; skip() and note() print "# ..." lines.
- run_tests() runs test functions (an exception becomes a failed check), then finish():
  cleanup, the sanitizer-report check (ASan, UBSan, TSan, valgrind) over every daemon
  noted with note_daemon_pids() or note_stderr_file(), and os._exit(1) when any check failed, 0 otherwise.
- cleanup() runs the hooks other modules registered with on_cleanup(stage, fn) in stage
  order (workers 10, mounts 20, temp dirs 30), only in the process that imported us (never
  in a forked child), at exit, on SIGTERM/SIGHUP, and from the watchdog.
- start_watchdog() (called by require_fuse) fires after EFSCACHE_TEST_TIMEOUT seconds
  (default 280): it prints every thread's stack, runs the on_watchdog() hooks (SIGKILL the
  daemons and workers), cleans up and exits 1.
"""

import atexit
import errno
import faulthandler
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback

__all__ = ["check", "eq", "skip", "note", "failed", "errno_of", "ename", "check_errno",
           "run_tests", "SANITIZER_MARKERS", "note_daemon_pids", "note_stderr_file",
           "check_sanitizer_reports", "finish", "cleanup", "on_cleanup", "on_watchdog",
           "start_watchdog", "TIMEOUT_SCALE"]

_failures = []
_count = 0
_lock = threading.Lock()
_main_pid = os.getpid()
# How much slower than a plain build the daemons run (tests/race.sh: TSan x4, valgrind
# x10): waits for an event (a worker's answer, cachelib.wait_for) are multiplied by it.
# Never a threshold on a duration: only how long to wait before calling it a hang.
TIMEOUT_SCALE = float(os.environ.get("EFSCACHE_TIMEOUT_SCALE", "1"))
_all_daemons = set()  # every daemon PID seen, for sanitizer reports
_stderr_files = []  # captured stderr of every daemon we started
_finished = [False]
_cleanups = []  # (stage, fn)
_cleanup_lock = threading.RLock()
_watchdog_hooks = []


def _emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(name, cond, detail=""):
    """Record one check.  Returns cond so callers can chain."""
    global _count
    with _lock:
        _count += 1
        if cond:
            _emit("ok - %s" % name)
        else:
            d = str(detail) if detail != "" else "check failed"
            _emit("not ok - %s: %s" % (name, d.replace("\n", "\n#   ")))
            _failures.append(name)
    return bool(cond)


def eq(name, got, expected, detail=""):
    """check(got == expected) with both values in the message."""
    if got == expected:
        return check(name, True)
    msg = "got %r, expected %r" % (got, expected)
    if detail:
        msg += " (%s)" % detail
    return check(name, False, msg)


def skip(name, reason):
    with _lock:
        _emit("ok - %s # SKIP %s" % (name, reason))


def note(msg):
    with _lock:
        for line in str(msg).splitlines() or [""]:
            _emit("# " + line)


def failed():
    return bool(_failures)


def errno_of(fn, *args, **kw):
    """Run fn; return 0 on success, the errno of an OSError otherwise."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


def ename(e):
    if e is None:
        return "None"
    if isinstance(e, int):
        return errno.errorcode.get(e, str(e)) if e else "0 (success)"
    return repr(e)


def check_errno(name, fn, args_mnt, args_src=None, expected=None):
    """Call fn(*args_mnt) and fn(*args_src); the errno values must be equal (and equal to
    `expected` when given: an int or a set of ints)."""
    got = errno_of(fn, *args_mnt)
    ref = errno_of(fn, *args_src) if args_src is not None else None
    ok = True
    parts = ["mount: %s" % ename(got)]
    if args_src is not None:
        parts.append("source: %s" % ename(ref))
        ok = ok and got == ref
    if expected is not None:
        exp = expected if isinstance(expected, (set, frozenset, tuple, list)) else {expected}
        parts.append("expected: %s" % "/".join(ename(x) for x in exp))
        ok = ok and got in exp
    return check(name, ok, ", ".join(parts))


def run_tests(tests):
    """Run each test function; an exception becomes a failed check.  Then clean up and exit
    0 (all passed) or 1."""
    try:
        for t in tests:
            try:
                t()
            except SystemExit:
                raise
            except BaseException as e:  # noqa: BLE001 - report everything
                tb = traceback.format_exc()
                check("%s (raised)" % t.__name__, False, "%s: %s\n%s" % (type(e).__name__, e, tb))
                if isinstance(e, KeyboardInterrupt):
                    break
    finally:
        cleanup()
    finish()


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")


def note_daemon_pids(pids):
    """Remember PIDs of daemons started outside mount_efscache (for sanitizer reports)."""
    _all_daemons.update(pids)


def note_stderr_file(path):
    """Remember a daemon's captured stderr (scanned for sanitizer reports at the end)."""
    _stderr_files.append(path)


# A memcheck error: in the summary, or its header (a daemon killed by SIGKILL writes none).
VALGRIND_ERROR = re.compile(r"ERROR SUMMARY: [1-9]|== (Invalid (read|write|free)|Mismatched free|"
                            r"Conditional jump|Use of uninitialised|Syscall param|"
                            r"Source and destination overlap)")


def _valgrind_log_patterns():
    """The --log-file=...%p patterns of EFSCACHE_WRAPPER (tests/race.sh runs the daemons
    under valgrind that way)."""
    return [a[len("--log-file="):] for a in shlex.split(os.environ.get("EFSCACHE_WRAPPER", ""))
            if a.startswith("--log-file=") and "%p" in a]


def check_sanitizer_reports():
    """Sanitizer reports of the daemons we started: in their captured stderr, or (when
    ASAN_OPTIONS/UBSAN_OPTIONS/TSAN_OPTIONS set log_path=PREFIX, as tests/run.sh does for
    daemons that lose their stderr) in PREFIX.PID files, or in the valgrind logs of
    EFSCACHE_WRAPPER's --log-file=...%p with a non-zero ERROR SUMMARY."""
    found = []
    for pattern in _valgrind_log_patterns():
        for pid in sorted(_all_daemons):
            p = pattern.replace("%p", str(pid))
            try:
                with open(p, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if VALGRIND_ERROR.search(text):
                found.append("%s:\n%s" % (p, text[-6000:]))
    for path in _stderr_files:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if any(mk in text for mk in SANITIZER_MARKERS):
            found.append("%s:\n%s" % (path, text[-3000:]))
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
        for item in os.environ.get(var, "").split(":"):
            if not item.startswith("log_path="):
                continue
            prefix = item[len("log_path="):]
            for pid in sorted(_all_daemons):
                p = "%s.%d" % (prefix, pid)
                try:
                    if os.path.getsize(p) > 0:
                        with open(p, errors="replace") as f:
                            found.append("%s:\n%s" % (p, f.read()[:3000]))
                except OSError:
                    pass
    if found or any(os.environ.get(v) for v in ("ASAN_OPTIONS", "UBSAN_OPTIONS",
                                                 "TSAN_OPTIONS", "EFSCACHE_WRAPPER")) or \
            _stderr_files:
        check("no sanitizer reports from the daemons started by this test", not found,
              "\n".join(found))


def finish():
    cleanup()
    if os.getpid() == _main_pid and not _finished[0]:
        _finished[0] = True
        check_sanitizer_reports()
    if _failures:
        _emit("# %d of %d checks failed:" % (len(_failures), _count))
        for f in _failures:
            _emit("#   %s" % f)
        sys.stdout.flush()
        os._exit(1)
    _emit("# all %d checks passed" % _count)
    sys.stdout.flush()
    os._exit(0)


def on_cleanup(stage, fn):
    """Run fn() at cleanup, after the hooks of lower stages."""
    _cleanups.append((stage, fn))
    _cleanups.sort(key=lambda x: x[0])


def on_watchdog(fn):
    """Run fn() when the watchdog fires, before cleanup (kill what may hang)."""
    _watchdog_hooks.append(fn)


def cleanup():
    """Stop workers, unmount everything we mounted (innermost first), remove temp dirs:
    the hooks registered with on_cleanup(), in stage order."""
    if os.getpid() != _main_pid:
        return
    # One at a time: the watchdog thread and the main thread may both get here.  The
    # watchdog must not wait forever behind a main thread stuck in a hung mount.
    locked = _cleanup_lock.acquire(timeout=60)
    try:
        for _, fn in list(_cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the next stages must still run
                check("cleanup: %s" % fn.__name__, False, "%s: %s" % (type(e).__name__, e))
    finally:
        if locked:
            _cleanup_lock.release()


atexit.register(cleanup)


def _on_signal(signum, frame):
    _emit("not ok - interrupted by signal %d" % signum)
    _failures.append("signal %d" % signum)
    cleanup()
    os._exit(1)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def start_watchdog():
    limit = float(os.environ.get("EFSCACHE_TEST_TIMEOUT", "280"))

    def fire():
        _emit("not ok - watchdog: %s still running after %ss (a FUSE call hung?); "
              "stack of every thread follows on stderr, then the daemons are killed"
              % (os.path.basename(sys.argv[0]), limit))
        _failures.append("watchdog")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for fn in _watchdog_hooks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - kill what we can
                pass
        time.sleep(0.5)
        try:
            cleanup()
        finally:
            os._exit(1)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
