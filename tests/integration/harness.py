"""Shared helpers for the efscache integration tests (Python 3 standard library only).

Every test script:

    import harness as h
    h.require_fuse()                      # exit 77 only when /dev/fuse is unusable
    base = h.tmpdir()                     # removed at exit, after every mount is gone
    m = h.mount_efscache(src, mnt, "ttl=0")
    h.check("name", condition, "detail")  # prints "ok - name" / "not ok - name: detail"
    h.run_tests([test_a, test_b])         # runs each, turns exceptions into "not ok", exits

The script exits 1 when any check failed, 0 otherwise.  Mounts are unmounted and the
daemons we started are stopped (by PID, never by name) in `finally`, at exit, on SIGTERM
and by a watchdog thread that fires when the script runs too long.

The code lives in testlib/ (one module per concern, each with its contract); this module
re-exports all of it, so `h.NAME` keeps working for every name tests use.  Import path:
tests/integration on PYTHONPATH (meson's test environment sets it; by hand:
PYTHONPATH=tests/integration python3 tests/integration/test_io.py).

Environment: EFSCACHE_BIN, EFS_EMU_BIN (set by meson; otherwise looked up in the usual
build directories), EFSCACHE_TEST_TIMEOUT (seconds for the watchdog, default 280).
"""

# Modules the old single-file harness imported: tests may reach them as h.time, h.hashlib.
import atexit  # noqa: F401
import ctypes  # noqa: F401
import errno  # noqa: F401
import faulthandler  # noqa: F401
import hashlib  # noqa: F401
import os  # noqa: F401
import pickle  # noqa: F401
import select  # noqa: F401
import shutil  # noqa: F401
import signal  # noqa: F401
import struct  # noqa: F401
import subprocess  # noqa: F401
import sys  # noqa: F401
import tempfile  # noqa: F401
import threading  # noqa: F401
import time  # noqa: F401
import traceback  # noqa: F401
import ctypes.util  # noqa: F401

from testlib.checks import *  # noqa: F401,F403
from testlib.mountinfo import *  # noqa: F401,F403
from testlib.trees import *  # noqa: F401,F403
from testlib.mounts import *  # noqa: F401,F403
from testlib.syscalls import *  # noqa: F401,F403
from testlib.workers import *  # noqa: F401,F403
