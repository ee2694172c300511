"""The parts of the integration-test harness, one module per concern.

Tests import the facade, `import harness as h`, which re-exports every public name of:

    checks     the check/report API, run_tests/finish, cleanup hooks, watchdog, sanitizer reports
    mountinfo  what is mounted where (/proc/self/mountinfo), without touching the mounts
    trees      temp dirs, file helpers, mount-versus-SOURCE stat and tree comparisons
    mounts     efscache and efs-emu mounts, their daemons (by PID), efs-emu's counters
    syscalls   ctypes wrappers: statx, renameat2, fallocate, utimensat, fcntl locks
    workers    forked children: as_user() once, Worker() for fds and locks held elsewhere

Dependencies point one way: checks <- mountinfo <- trees <- mounts; syscalls and workers
need only checks.  Found through PYTHONPATH=tests/integration (the meson test environment).
"""
