"""The report of contrib/bench/run.sh: raw rows in, results.md, results.json and a gnuplot
chart out (Python 3 standard library only; gnuplot optional).

Contract: report(RAW.csv, META.json, OUTDIR) reads the rows run.sh wrote (one measurement
per row, every run kept), takes medians per (setup, workload), ratios against the baselines
measured in the same run (efs-emu direct, the local-disk limit), and judges the performance
targets listed in targets().  It measures nothing (measure.py does); a target whose inputs
are missing is reported as n/a, never as met.
"""

import collections
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

MIB = 1 << 20
GIB = 1 << 30


# Setups in table order: key -> (column title, group, cache state)
SETUPS = [
    ("limit-cold", "limit cold-disk", "limit", "cold"),
    ("limit-warm", "limit warm-page", "limit", "warm-page"),
    ("efs", "efs (emu)", "efs", "cold"),
    ("copy", "copy (cp + local)", "copy", "warm-page"),
    ("rclone-cold", "rclone cold", "rclone", "cold"),
    ("rclone-warm-disk", "rclone warm-disk", "rclone", "warm-disk"),
    ("rclone-warm-page", "rclone warm-page", "rclone", "warm-page"),
    ("efscache-cold", "efscache cold", "efscache", "cold"),
    ("efscache-warm-disk", "efscache warm-disk", "efscache", "warm-disk"),
    ("efscache-warm-page", "efscache warm-page", "efscache", "warm-page"),
]
SETUP_TITLE = {k: t for k, t, _, _ in SETUPS}
SETUP_STATE = {k: s for k, _, _, s in SETUPS}

# Workloads in table order: key -> (title, unit, higher is better)
WORKLOADS = [
    ("seq1", "seq 1 MiB, 1 job", "MiB/s", True),
    ("seq4", "seq 1 MiB, 4 jobs", "MiB/s", True),
    ("load", "model load (64 MiB reads)", "MiB/s", True),
    ("rand4k", "rand 4 KiB buffered QD1", "IOPS", True),
    ("rand4k-direct", "rand 4 KiB O_DIRECT QD1", "IOPS", True),
    ("rand4k-direct-qd16", "rand 4 KiB O_DIRECT QD16", "IOPS", True),
    ("deptree", "dependency tree import", "s", False),
    ("cp", "cp from emu (copy's cost)", "MiB/s", True),
    ("warm", "efscachectl warm", "MiB/s", True),
]
WL_TITLE = {k: t for k, t, _, _ in WORKLOADS}
PLOT_LABEL = {"seq1": "seq 1 job", "seq4": "seq 4 jobs", "load": "model load",
              "rand4k": "buffered QD1", "rand4k-direct": "O_DIRECT QD1",
              "rand4k-direct-qd16": "O_DIRECT QD16", "deptree": "import tree",
              "cp": "cp (copy setup)", "warm": "efscachectl warm"}
WL_UNIT = {k: u for k, _, u, _ in WORKLOADS}
WL_HIGHER = {k: h for k, _, _, h in WORKLOADS}


def limit_ref(setup, wl, med):
    """The limit row a row is compared with: warm-page rows with limit warm-page,
    everything else (data read from a disk or the emulator) with limit cold-disk,
    or the other one if only that was measured (O_DIRECT rows have one limit row,
    buffered random reads only a warm-page one)."""
    want = "limit-warm" if SETUP_STATE.get(setup) == "warm-page" else "limit-cold"
    other = "limit-cold" if want == "limit-warm" else "limit-warm"
    for ref in (want, other):
        m = med.get((ref, wl))
        if m and m["median"] is not None:
            return m
    return None


# Rows with no efs counterpart of their own are compared with efs reading the whole
# file (model load).
EFS_REF = {"cp": "load", "warm": "load"}


def fmt(v, unit=None):
    if v is None:
        return "–"
    if unit == "s":
        return "%.2f s" % v if v < 100 else "%.0f s" % v
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_ratio(r):
    if r is None:
        return "–"
    return "%.2f×" % r if r < 10 else "%.1f×" % r


def run_cmd(argv):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=20)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    fuse = run_cmd(["pkg-config", "--modversion", "fuse3"]) or "?"
    fusermount = run_cmd(["fusermount3", "--version"])
    rclone = run_cmd(["rclone", "version"]).splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "libfuse": fuse,
        "fusermount3": fusermount,
        "fio": run_cmd(["fio", "--version"]) or "?",
        "rclone": rclone[0] if rclone else "?",
        "python": platform.python_version(),
        "gnuplot": run_cmd(["gnuplot", "--version"]) or "?",
    }


def read_raw(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("value", "bytes", "seconds", "cpu_s", "rss_kib", "src_bytes", "load1"):
                try:
                    r[k] = float(r[k]) if r.get(k) not in (None, "", "NA") else None
                except ValueError:
                    r[k] = None
            rows.append(r)
    return rows


def medians(rows):
    """(setup, workload) -> dict(median, min, max, n, failed, notes, seconds)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["setup"], r["workload"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r["value"] is not None]
        vals = [r["value"] for r in ok]
        secs = [r["seconds"] for r in ok if r["seconds"] is not None]
        srcb = [r["src_bytes"] for r in ok if r["src_bytes"] is not None]
        notes = sorted({r["note"] for r in rs if r["note"]})
        out[key] = {
            "median": statistics.median(vals) if vals else None,
            "min": min(vals) if vals else None,
            "max": max(vals) if vals else None,
            "n": len(vals),
            "failed": len(rs) - len(vals),
            "seconds": statistics.median(secs) if secs else None,
            "src": statistics.median(srcb) if srcb else None,
            "notes": notes,
        }
    return out


def ratio(a, b, higher=True):
    """How many times better a is than b (>1 = a better)."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if higher else b / a


def targets(med, meta, rows):
    cap = float(meta.get("emu_bw_mib", 500))
    res = []

    def get(s, w):
        m = med.get((s, w))
        return m["median"] if m else None

    def add(name, value, threshold, unit, ok):
        res.append({"target": name, "value": value, "threshold": threshold, "unit": unit,
                    "met": None if ok is None else bool(ok)})

    def cmp(v, thr):
        return None if v is None or thr is None else v >= thr

    for wl in ("seq1", "seq4"):
        lw, ew = get("limit-warm", wl), get("efscache-warm-page", wl)
        thr = 0.9 * lw if lw else None
        add("warm-page %s ≥ 0.9 × limit warm-page" % wl, ew, thr, "MiB/s", cmp(ew, thr))
    for wl in ("seq1", "seq4"):
        lc, ed = get("limit-cold", wl), get("efscache-warm-disk", wl)
        thr = 0.8 * lc if lc else None
        add("warm-disk %s ≥ 0.8 × limit cold-disk" % wl, ed, thr, "MiB/s", cmp(ed, thr))
    ef, ec = get("efs", "seq1"), get("efscache-cold", "seq1")
    thr = 3 * ef if ef else None
    add("cold seq1 ≥ 3 × efs seq1", ec, thr, "MiB/s", cmp(ec, thr))
    add("cold seq1 ≥ 0.7 × emu cap (%g MiB/s)" % cap, ec, 0.7 * cap, "MiB/s",
        cmp(ec, 0.7 * cap))
    ld, ed = get("limit-cold", "rand4k-direct"), get("efscache-warm-disk", "rand4k-direct")
    thr = 0.5 * ld if ld else None
    add("warm 4 KiB O_DIRECT IOPS ≥ 0.5 × limit", ed, thr, "IOPS", cmp(ed, thr))
    # every efscache row beats the matching rclone row
    losses, compared = [], 0
    for wl, _, _, higher in WORKLOADS:
        for state in ("cold", "warm-disk", "warm-page"):
            e, r = get("efscache-" + state, wl), get("rclone-" + state, wl)
            if e is None or r is None:
                continue
            compared += 1
            if ratio(e, r, higher) < 1:
                losses.append("%s %s (%s vs %s)" % (wl, state, fmt(e, WL_UNIT[wl]),
                                                    fmt(r, WL_UNIT[wl])))
    add("every efscache row beats rclone (%d rows compared)" % compared,
        "%d lost" % len(losses) if compared else None, "0 lost", "",
        (not losses) if compared else None)
    w = get("efscache-cold", "warm")
    add("efscachectl warm ≥ 0.7 × emu cap", w, 0.7 * cap, "MiB/s", cmp(w, 0.7 * cap))
    rss = [r["rss_kib"] for r in rows if r["setup"].startswith("efscache") and r["rss_kib"]]
    peak = max(rss) / 1024 if rss else None
    add("efscache daemon peak RSS < 100 MiB", peak, 100, "MiB",
        None if peak is None else peak < 100)
    return res, losses


def cpu_per_gib(rows, prefix):
    out = {}
    for state in ("cold", "warm-disk", "warm-page"):
        setup = "%s-%s" % (prefix, state)
        cpu = gib = 0.0
        for r in rows:
            if r["setup"] != setup or r["workload"] not in ("seq1", "seq4", "load"):
                continue
            if r["cpu_s"] is None or not r["bytes"]:
                continue
            cpu += r["cpu_s"]
            gib += r["bytes"] / GIB
        out[state] = (cpu / gib) if gib else None
    return out


def write_plot(med, outdir, title):
    """Clustered bars, one panel per unit, log scale; returns the PNG path or None."""
    gp = shutil.which("gnuplot")
    if not gp:
        return None
    setups = [s for s, _, _, _ in SETUPS if any(k[0] == s for k in med)]
    panels = []
    for unit, label in (("MiB/s", "throughput, MiB/s (higher is better)"),
                        ("IOPS", "4 KiB random reads, IOPS (higher is better)"),
                        ("s", "seconds (lower is better)")):
        wls = [w for w, _, u, _ in WORKLOADS if u == unit and any(k[1] == w for k in med)]
        if unit == "MiB/s":  # the one-off rows go to the seconds panel as time
            wls = [w for w in wls if w not in ("cp", "warm")]
        if wls:
            panels.append((unit, label, wls))
    # cp and warm are clearer as seconds next to the dependency tree
    extra = [w for w in ("cp", "warm") if any(k[1] == w for k in med)]
    if extra:
        for i, p in enumerate(panels):
            if p[0] == "s":
                panels[i] = (p[0], p[1], p[2] + extra)
                break
        else:
            panels.append(("s", "seconds (lower is better)", extra))
    datafile = os.path.join(outdir, "results.dat")
    with open(datafile, "w") as f:
        for unit, _, wls in panels:
            f.write("# panel %s\n# workload %s\n" % (unit, " ".join(setups)))
            for w in wls:
                vals = []
                for s in setups:
                    m = med.get((s, w))
                    v = None
                    if m and m["median"] is not None:
                        v = m["median"]
                        if unit == "s" and w in ("cp", "warm"):
                            v = m["seconds"]
                    vals.append("%.6g" % v if v else "?")
                f.write('"%s" %s\n' % (PLOT_LABEL.get(w, w), " ".join(vals)))
            f.write("\n\n")
    png = os.path.join(outdir, "results.png")
    colors = ["#4d4d4d", "#9e9e9e", "#d62728", "#ff7f0e", "#c5b0d5", "#9467bd", "#5e3c99",
              "#a1d99b", "#31a354", "#006d2c"]
    col_of = {s: colors[i] for i, (s, _, _, _) in enumerate(SETUPS)}
    lines = [
        "set terminal pngcairo noenhanced size 1500,%d font 'sans,10'" % (380 * len(panels) + 60),
        "set output '%s'" % png,
        "set datafile missing '?'",
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.9 border -1",
        "set boxwidth 0.9",
        "set logscale y",
        "set grid ytics",
        "set rmargin at screen 0.84",
        "set key at screen 0.995, screen 0.95 right top vertical",
        "set format y '%g'",
        "set multiplot layout %d,1 title '%s'" % (len(panels), title.replace("'", "")),
    ]
    for idx, (unit, label, wls) in enumerate(panels):
        lines.append("set title '%s'" % label)
        lines.append("set yrange [*:*]")
        lines.append("set xrange [-0.6:%g]" % (len(wls) - 0.4))
        if idx == 1:
            lines.append("unset key")
        plots = []
        for j, s in enumerate(setups):
            col = j + 2
            t = SETUP_TITLE[s]
            if j == 0:
                plots.append("'%s' index %d using %d:xtic(1) title '%s' lc rgb '%s'"
                             % (datafile, idx, col, t, col_of[s]))
            else:
                plots.append("'' index %d using %d title '%s' lc rgb '%s'"
                             % (idx, col, t, col_of[s]))
        lines.append("plot " + ", \\\n     ".join(plots))
    lines.append("unset multiplot")
    script = os.path.join(outdir, "results.gp")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = subprocess.run([gp, script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write("gnuplot failed:\n" + r.stdout)
        return None
    return png


def report(raw_path, meta_path, outdir):
    rows = read_raw(raw_path)
    meta = json.load(open(meta_path))
    mach = machine_info()
    med = medians(rows)
    quick = meta.get("quick") == "1"
    title = "efscache benchmark" + (" — QUICK smoke run (not representative)" if quick else "")
    wl_present = [w for w, _, _, _ in WORKLOADS if any(k[1] == w for k in med)]
    setups_present = [s for s, _, _, _ in SETUPS if any(k[0] == s for k in med)]

    L = []
    L.append("# " + title)
    L.append("")
    L.append("Generated by `contrib/bench/run.sh` on %s (took %s min). Raw runs: "
             "[raw.csv](raw.csv), [results.json](results.json); chart: "
             "[results.png](results.png)." % (meta.get("date", "?"),
                                               meta.get("duration_min", "?")))
    if quick:
        L.append("")
        L.append("**QUICK=1**: SIZE=%s, %s run(s) per row, short random-read runs. "
                 "For smoke-testing the script only; do not quote these numbers."
                 % (meta.get("size_h"), meta.get("runs")))
    L.append("")
    L.append("![results](results.png)")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, v in (("CPU", mach["cpu"]), ("cores", mach["cores"]),
                 ("RAM", "%s GiB" % mach["ram_gib"]), ("kernel (`uname -r`)", mach["kernel"]),
                 ("libfuse", mach["libfuse"] + (" (%s)" % mach["fusermount3"]
                                                if mach["fusermount3"] else "")),
                 ("fio", mach["fio"]), ("rclone", mach["rclone"]),
                 ("python", mach["python"]), ("gnuplot", mach["gnuplot"]),
                 ("date", meta.get("date", "?")),
                 ("efscache tree", meta.get("git", "?")),
                 ("scratch dir (SRC, caches, copy)", "%s (%s)" % (meta.get("tmp"),
                                                                  meta.get("tmp_fs")))):
        L.append("| %s | %s |" % (k, v))
    L.append("")
    L.append("## Settings")
    L.append("")
    L.append("- big file: %s (%s bytes) of random data; runs per row: %s (median shown); "
             "random-read runs: %s s each." % (meta.get("size_h"), meta.get("size"),
                                               meta.get("runs"), meta.get("rand_runtime")))
    L.append("- **efs**: `%s`" % meta.get("emu_cmd"))
    L.append("- **rclone**: `%s`" % meta.get("rclone_cmd"))
    L.append("- **efscache**: `%s`" % meta.get("efscache_cmd"))
    L.append("- **copy**: `%s`, then the workloads on the copy, which the copy left in the page "
             "cache (treated as warm-page); the `cp` row is the copy's own cost, the time to "
             "first byte of this workaround." % meta.get("copy_cmd"))
    L.append("- dependency tree: %s" % meta.get("deptree_desc", "not run"))
    L.append("- cache states: *cold* = empty cache (fresh cache dir, freshly mounted) and page "
             "cache dropped (`echo 3 > /proc/sys/vm/drop_caches`); *warm-disk* = cache filled "
             "by a previous read, page cache dropped; *warm-page* = right after a read, "
             "nothing dropped, and what the read path uses from memory held mmapped by a "
             "helper during the run (the file itself for limit, copy and efscache; rclone's "
             "cache file for rclone), because other users of this machine drop the page "
             "cache about once a second (mapped pages survive drop_caches; reads are "
             "unaffected). *limit cold-disk* drops the page cache "
             "before each run; *limit warm-page* reads the file first. The emulator never "
             "keeps page cache across opens (as NFS revalidates), so *efs* is always cold. "
             "The same holds for any mount that does not set FOPEN_KEEP_CACHE: the kernel "
             "drops the file's pages at every open, so a warm-page row whose note says "
             "'resident at open: 0%' (measured with fincore, which opens the file too) read "
             "its data through the daemon again.")
    L.append("- rows are interleaved: each round measures every setup once, so a noisy "
             "moment hits all setups alike. A warm-page dependency-tree run during which "
             "someone else dropped the page cache (`drop_pagecache` in /proc/vmstat moved) "
             "says so in its notes.")
    loads = [r["load1"] for r in rows if r.get("load1") is not None]
    if loads:
        L.append("- the machine is shared: the 1-minute load average after each row had a "
                 "median of %.1f (min %.1f, max %.1f) on %s cores, so CPU-bound rows "
                 "(page-cache reads, imports, the daemons) are noisy; compare within a round "
                 "(raw.csv) when in doubt." % (statistics.median(loads), min(loads),
                                                 max(loads), mach["cores"]))
    L.append("")
    L.append("## Results (medians)")
    L.append("")
    hdr = ["workload", "unit"] + [SETUP_TITLE[s] for s in setups_present]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * 2 + "---:|" * len(setups_present))
    for w in wl_present:
        cells = [WL_TITLE[w], WL_UNIT[w]]
        for s in setups_present:
            m = med.get((s, w))
            if not m:
                cells.append("")
            elif m["median"] is None:
                cells.append("failed")
            else:
                c = fmt(m["median"], WL_UNIT[w])
                if w in ("load", "cp", "warm") and m["seconds"] is not None:
                    c += " (%.1f s)" % m["seconds"]
                if m["failed"]:
                    c += " (%d failed)" % m["failed"]
                cells.append(c)
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append("Empty cell: not measured for that setup (see Settings). `load`, `cp` and `warm` "
             "show MiB/s and the median time in parentheses.")
    L.append("")
    L.append("## Ratios")
    L.append("")
    L.append("×limit compares each row with limit warm-page if the row is warm-page, else with "
             "limit cold-disk (when only one limit row exists for a workload, with that one); "
             "×efs compares with efs on the same workload (`cp` and `warm`: with efs model "
             "load, the same whole-file read). >1 = better (for seconds: faster). *from "
             "source* is what the emulator served during the run (its `read_bytes` counter), "
             "median over runs: 0 means the data came from the cache alone.")
    L.append("")
    L.append("| workload | setup | median | min–max | runs | ×limit | ×efs | from source | notes |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for w in wl_present:
        for s in setups_present:
            m = med.get((s, w))
            if not m:
                continue
            hi = WL_HIGHER[w]
            u = WL_UNIT[w]
            lref = limit_ref(s, w, med)
            eref = med.get(("efs", EFS_REF.get(w, w)))
            rl = ratio(m["median"], lref["median"] if lref else None, hi)
            re_ = ratio(m["median"], eref["median"] if eref else None, hi)
            rng = ("%s–%s" % (fmt(m["min"], u), fmt(m["max"], u))) if m["n"] > 1 else ""
            src = "" if s.startswith("limit") or s == "copy" and w != "cp" else (
                "%.0f MiB" % (m["src"] / MIB) if m["src"] is not None else "")
            L.append("| %s | %s | %s %s | %s | %d%s | %s | %s | %s | %s |" % (
                w, SETUP_TITLE[s], fmt(m["median"], u), "" if u == "s" else u, rng, m["n"],
                (" (+%d failed)" % m["failed"]) if m["failed"] else "",
                fmt_ratio(rl), fmt_ratio(re_), src, "; ".join(m["notes"])))
    L.append("")
    L.append("## Targets")
    L.append("")
    tg, losses = targets(med, meta, rows)
    L.append("| target | measured | threshold | result |")
    L.append("|---|---:|---:|---|")
    for t in tg:
        v = t["value"]
        vs = v if isinstance(v, str) else (fmt(v) + " " + t["unit"] if v is not None else "–")
        th = t["threshold"]
        ths = th if isinstance(th, str) else (fmt(th) + " " + t["unit"] if th is not None else "–")
        res = "n/a (not measured)" if t["met"] is None else ("**met**" if t["met"] else "**missed**")
        L.append("| %s | %s | %s | %s |" % (t["target"], vs, ths, res))
    if losses:
        L.append("")
        L.append("efscache rows slower than the matching rclone row: " + "; ".join(losses) + ".")
    L.append("")
    L.append("## Daemon cost")
    L.append("")
    L.append("CPU seconds (utime + stime from /proc/PID/stat, before and after each run) per "
             "GiB the application read, over the seq1, seq4 and load rows; peak RSS is the "
             "largest VmHWM seen in /proc/PID/status.")
    L.append("")
    L.append("| daemon | cold | warm-disk | warm-page | peak RSS |")
    L.append("|---|---:|---:|---:|---:|")
    for prefix in ("efscache", "rclone"):
        c = cpu_per_gib(rows, prefix)
        rss = [r["rss_kib"] for r in rows if r["setup"].startswith(prefix) and r["rss_kib"]]
        L.append("| %s | %s | %s | %s | %s |" % (
            prefix, *["%.2f s/GiB" % c[k] if c[k] is not None else "–"
                      for k in ("cold", "warm-disk", "warm-page")],
            "%.0f MiB" % (max(rss) / 1024) if rss else "–"))
    if meta.get("notes"):
        L.append("")
        L.append("## Notes from this run")
        L.append("")
        for n in meta["notes"]:
            L.append("- " + n)
    L.append("")
    L.append("## fio jobs")
    L.append("")
    L.append("Run as `fio --output-format=json --output=RUN.json contrib/fio/JOB.fio` with the "
             "environment shown; FILENAME is the big file in each setup's directory.")
    for job, env in meta.get("fio_jobs", {}).items():
        L.append("")
        L.append("### %s (`%s`)" % (job, env))
        L.append("")
        L.append("```ini")
        path = os.path.join(meta.get("fio_dir", ""), job + ".fio")
        try:
            L.append(open(path).read().rstrip())
        except OSError:
            L.append("; (job file not found)")
        L.append("```")
    L.append("")

    png = write_plot(med, outdir, title)
    if not png:
        L.insert(L.index("![results](results.png)"), "(gnuplot failed: no chart)")
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(L))
    summary = {
        "meta": meta,
        "machine": mach,
        "medians": [{"setup": s, "workload": w, **v} for (s, w), v in sorted(med.items())],
        "targets": tg,
        "runs": rows,
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
        f.write("\n")
    # a short console summary
    for t in tg:
        res = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        v = t["value"]
        print("%-55s %s" % (t["target"], res + ("" if v is None else "  (%s)" % (
            v if isinstance(v, str) else fmt(v) + " " + t["unit"]))))


def sweep_table(results_path, size, runs, randn):
    """The table of contrib/bench/sweep.sh from its "CHUNK PREFETCH KIND VALUE" lines:
    medians per (chunk_size, prefetch)."""
    vals = collections.defaultdict(list)
    with open(results_path) as f:
        for line in f:
            cs, pf, k, v = line.split()
            vals[(cs, int(pf), k)].append(float(v))
    out = ["cold reads through efscache over efs-emu (defaults), SIZE=%s, median of %s runs, "
           "%s random 4 KiB reads" % (size, runs, randn), "",
           "| chunk_size | prefetch | seq MiB/s | random ms/read | random KiB fetched/read |",
           "|---|---:|---:|---:|---:|"]

    def med(cs, pf, k):
        v = vals.get((cs, pf, k))
        return statistics.median(v) if v else float("nan")

    for cs, pf in sorted({(c, p) for c, p, _ in vals}, key=lambda x: (int(x[0][:-1]), x[1])):
        out.append("| %s | %d | %.0f | %.2f | %.0f |" % (
            cs, pf, med(cs, pf, "seq_mibs"), med(cs, pf, "rand_ms"),
            med(cs, pf, "rand_kib_per_read")))
    return "\n".join(out)
