#!/usr/bin/env python3
"""The command line of the bench helpers, for contrib/bench/run.sh and passthrough.sh (Python 3
standard library only).  The work is in measure.py (measurements) and report.py (the
report); this file only dispatches.

Subcommands:
  fio JSON                     -> "MiB/s IOPS bytes seconds" of a fio --output-format=json run
  load FILE [PIECE_MIB]        -> "seconds bytes": read FILE whole in PIECE_MIB (64) pieces,
                                  as torch.load / safetensors readers do
  gentree DIR PKGS MODS        generate PKGS packages x MODS modules (a site-packages stand-in)
  imports DIR PKGS MODS        -> "seconds files": import the first PKGS packages and all their
                                  modules from DIR (run with -B so no .pyc is written)
  snap PID|- EMU|-             -> "cpu_seconds vmhwm_kib emu_read_bytes": PID's utime+stime
                                  and VmHWM ("- -" without a PID or if it is gone) and the
                                  EFS emulator's read_bytes counter ("-" if unreadable)
  pin READY FILE...            map FILEs and touch every page, create READY, then wait for
                               SIGTERM: mapped pages survive other users' drop_caches
  randread FILE N              -> "ms_per_read" of N random 4 KiB preads (seed 7)
  median V...                  -> the median
  report RAW.csv META.json OUTDIR
                               write OUTDIR/results.md, results.json, results.png (gnuplot)
  sweep-report RESULTS SIZE RUNS RANDN
                               -> the markdown table of sweep.sh (medians per pair)
"""

import statistics
import sys

from measure import fio_summary, gentree, imports, load, pin, randread, snap
from report import report, sweep_table


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "fio":
        print(fio_summary(args[0]))
    elif cmd == "load":
        print(load(args[0], int(args[1]) if len(args) > 1 else 64))
    elif cmd == "gentree":
        gentree(args[0], int(args[1]), int(args[2]))
    elif cmd == "imports":
        print(imports(args[0], int(args[1]), int(args[2])))
    elif cmd == "pin":
        pin(args[0], args[1:])
    elif cmd == "snap":
        print(snap(args[0], args[1]))
    elif cmd == "median":
        print(statistics.median(float(a) for a in args))
    elif cmd == "randread":
        print(randread(args[0], int(args[1])))
    elif cmd == "report":
        report(args[0], args[1], args[2])
    elif cmd == "sweep-report":
        print(sweep_table(args[0], args[1], args[2], args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
