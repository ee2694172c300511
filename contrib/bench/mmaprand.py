#!/usr/bin/env python3
"""mmaprand.py FILE [REGION_MIB] [SEED]: read FILE the way model loaders do
through mmap: map it, visit its REGION_MIB (1) MiB regions in a shuffled
order (a fixed seed: the same order every run), and touch every 4 KiB page
of each region.  Prints MiB/s of the whole pass (the file's size over the
time from the first touch to the last).  Exit 1 if the file is empty."""
import mmap
import os
import random
import sys
import time


def main():
    path = sys.argv[1]
    region = int(sys.argv[2]) << 20 if len(sys.argv) > 2 else 1 << 20
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 18
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 1
        mm = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        order = list(range(0, size, region))
        random.Random(seed).shuffle(order)
        page = mmap.PAGESIZE
        t0 = time.monotonic()
        acc = 0
        for start in order:
            for off in range(start, min(start + region, size), page):
                acc ^= mm[off]
        t1 = time.monotonic()
        mm.close()
    print("%.3f" % (size / (1 << 20) / (t1 - t0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
