#!/usr/bin/env python3
"""Dependency-tree benchmark helpers for contrib/bench/deptree.sh (standard library only).

Subcommands:
  gen ROOT SITES TOPS SUBS MODS
        generate ROOT/site0..site{SITES-1}, each a stand-in for a site-packages directory on
        sys.path: TOPS top-level packages per site, each with MODS modules, SUBS nested
        subpackages (each with MODS modules and one sub-subpackage of MODS // 2 modules),
        data files, a py.typed and a .dist-info directory. Every package's __init__.py
        imports all of its modules and subpackages, so `import TOP` opens every .py (or its
        .pyc) of the package; every fourth top package reads a data file at import. Sites
        with an even number get __pycache__/*.pyc (an installed package), odd ones do not
        (a source checkout, an editable install). Writes ROOT/manifest.json.
  code ROOT       -> the `python3 -c` program that imports the whole tree below sys.argv[1]
                     (the tree's root on some mount) and prints how many of its modules
                     were loaded
  emu EMU|-       -> "lookups getattrs opens readdirs read_bytes estale" of an efs-emu mount
                     ("- - - - - -" if unreadable)
  report RAW.csv META.json OUT.md
        medians per (setup, workload), ratios to efs and to local, the targets of issue 17,
        written as Markdown to OUT.md and printed
"""

import csv
import json
import os
import py_compile
import statistics
import sys

MOD_TEXT = '''"""{name}: a stand-in for a small library module."""
import os
import sys
import re
import json
import collections

VALUE = {v}
NAME = "{name}"
_PATTERN = re.compile(r"^[a-z_]+[0-9]*$")
_TABLE = collections.OrderedDict((k, k * VALUE) for k in range(8))


def f(x):
    """Add VALUE."""
    return x + VALUE


def g(items):
    return [f(i) for i in items if _PATTERN.match(str(i)) is None]


class C:
    """A small class."""

    limit = {v} % 97

    def __init__(self, v=VALUE):
        self.v = v

    def __repr__(self):
        return "C(%r)" % (self.v,)

    def scaled(self, k):
        return C(self.v * k)


def _helper_{m}(a, b=2, *args, **kw):
    return json.dumps({{"a": a, "b": b, "n": len(args) + len(kw)}})
''' + "# padding: real modules are a few KiB, mostly docstrings and comments\n" * 20


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _package(d, dotted, mods, subs, depth, counts, compile_pyc, data=False):
    """Write package 'dotted' in directory d; returns nothing, updates counts."""
    os.makedirs(d, exist_ok=True)
    lines = ['"""Package %s."""' % dotted]
    for m in range(mods):
        name = "mod%02d" % m
        _write(os.path.join(d, name + ".py"),
               MOD_TEXT.format(name="%s.%s" % (dotted, name), v=counts["modules"] * 7 + m, m=m))
        counts["modules"] += 1
        lines.append("from . import %s" % name)
    nsub = subs if depth == 0 else (1 if depth == 1 else 0)
    for s in range(nsub):
        sub = "sub%d" % s
        _package(os.path.join(d, sub), "%s.%s" % (dotted, sub),
                 mods if depth == 0 else max(1, mods // 2), subs, depth + 1, counts, compile_pyc)
        lines.append("from . import %s" % sub)
    if data:
        lines.append("with open(__import__('os').path.join(__import__('os').path.dirname("
                     "__file__), 'data', 'table.json')) as _f:\n    TABLE = _f.read()")
    _write(os.path.join(d, "__init__.py"), "\n".join(lines) + "\n")
    counts["modules"] += 1
    if compile_pyc:
        for name in os.listdir(d):
            if name.endswith(".py"):
                py_compile.compile(os.path.join(d, name), doraise=True)
                counts["pyc"] += 1


def gen(root, sites, tops, subs, mods):
    counts = {"modules": 0, "pyc": 0}
    site_names, top_names = [], []
    for si in range(sites):
        site = os.path.join(root, "site%d" % si)
        site_names.append("site%d" % si)
        for t in range(tops):
            top = "lib%d_%02d" % (si, t)
            top_names.append(top)
            d = os.path.join(site, top)
            _package(d, top, mods, subs, 0, counts, compile_pyc=si % 2 == 0, data=t % 4 == 0)
            dd = os.path.join(d, "data")
            os.makedirs(dd, exist_ok=True)
            _write(os.path.join(dd, "table.json"), json.dumps({str(i): i * i for i in range(200)}))
            _write(os.path.join(dd, "README.txt"), "data of %s\n" % top * 50)
            with open(os.path.join(dd, "blob.bin"), "wb") as f:
                f.write(os.urandom(8192))
            _write(os.path.join(d, "py.typed"), "")
            di = os.path.join(site, "%s-1.%d.0.dist-info" % (top, t))
            os.makedirs(di, exist_ok=True)
            _write(os.path.join(di, "METADATA"), "Metadata-Version: 2.1\nName: %s\n" % top)
            _write(os.path.join(di, "RECORD"), "%s/__init__.py,,\n" % top * 20)
            _write(os.path.join(di, "top_level.txt"), top + "\n")
            _write(os.path.join(di, "INSTALLER"), "pip\n")
    files = dirs = 0
    for _, dns, fns in os.walk(root):
        files += len(fns)
        dirs += len(dns)
    manifest = {"sites": site_names, "tops": top_names, "modules": counts["modules"],
                "pyc": counts["pyc"], "files": files, "dirs": dirs,
                "shape": {"sites": sites, "tops": tops, "subs": subs, "mods": mods}}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("%d modules (%d with .pyc), %d files, %d directories in %d sys.path entries"
          % (counts["modules"], counts["pyc"], files, dirs, sites))


def code(root):
    with open(os.path.join(root, "manifest.json")) as f:
        m = json.load(f)
    return ("import sys\n"
            "d = sys.argv[1]\n"
            "sys.path += [d + '/' + s for s in %r]\n"
            "import %s\n"
            "print(sum(1 for m in list(sys.modules.values())\n"
            "          if (getattr(m, '__file__', None) or '').startswith(d + '/')))\n"
            % (m["sites"], ", ".join(m["tops"])))


EMU_KEYS = ("lookups", "getattrs", "opens", "readdirs", "read_bytes", "estale")


def emu(mnt):
    try:
        v = os.getxattr(mnt, "user.efsemu.stats").decode()
        d = dict(kv.split("=", 1) for kv in v.split())
        return " ".join(d.get(k, "-") for k in EMU_KEYS)
    except (OSError, ValueError):
        return " ".join("-" for _ in EMU_KEYS)


# ---- report ----

WORKLOADS = [("import", "import the tree (`python3 -c 'import ...'`)"),
             ("stat", "`find TREE -type f | xargs stat`")]
SETUP_ORDER = ["local-cold", "local-warm", "efs", "efs-warm",
               "efscache-cold", "efscache-warm-disk", "efscache-warm-page", "efscache-restart",
               "relaxed-cold", "relaxed-warm-disk", "relaxed-warm-page", "relaxed-restart",
               "rclone-cold", "rclone-warm-disk", "rclone-warm-page", "rclone-restart"]


def _notes(rs):
    """Distinct notes of a row's runs; drops by others are summed up in one note."""
    drops = [r for r in rs if (r.get("note") or "").startswith("caches dropped")]
    other = sorted({r["note"] for r in rs if r.get("note") and r not in drops})
    if drops:
        other.insert(0, "others dropped the caches during %d of %d runs" % (len(drops), len(rs)))
    return other


def _medians(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["setup"], r["workload"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r["seconds"] not in ("", None)]
        secs = [float(r["seconds"]) for r in ok]

        def med(k):
            v = [float(r[k]) for r in ok if r.get(k) not in ("", "-", None)]
            return statistics.median(v) if v else None
        out[key] = {"median": statistics.median(secs) if secs else None, "n": len(secs),
                    "failed": len(rs) - len(ok), "min": min(secs) if secs else None,
                    "max": max(secs) if secs else None,
                    "req": {k: med(k) for k in ("lookups", "getattrs", "opens", "readdirs",
                                                "estale")},
                    "notes": _notes(rs)}
    return out


def _f(v):
    return "–" if v is None else ("%.2f s" % v if v < 100 else "%.0f s" % v)


def _x(a, b):
    return "–" if a is None or b is None or b <= 0 else "%.2f×" % (a / b)


def report(raw, meta_path, out):
    with open(raw, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(meta_path) as f:
        meta = json.load(f)
    med = _medians(rows)

    def get(s, w):
        m = med.get((s, w))
        return m["median"] if m else None

    L = ["# Dependency-tree benchmark", "",
         "%s, %s; %s" % (meta.get("date", "?"), meta.get("machine", "?"), meta.get("git", "?")),
         "", "- tree: %s" % meta.get("tree", "?"),
         "- efs: `%s`" % meta.get("emu_cmd", "?"),
         "- efscache (default): `%s`" % meta.get("efscache_cmd", "?"),
         "- efscache (relaxed): `%s`" % meta.get("relaxed_cmd", "?"),
         "- rclone: %s" % meta.get("rclone_cmd", "?"),
         "- medians of %s runs (min–max in brackets); ratios are seconds ÷ seconds of the "
         "reference row of the same run set: vs efs = ÷ efs (client caches dropped), vs local "
         "= ÷ local warm for warm-page rows, ÷ local cold-disk for the others" % meta.get("runs"),
         "- emu requests: median LOOKUP / GETATTR / OPEN / READDIR requests that reached "
         "efs-emu per run (the \"server round trips\")",
         "- cold: page, dentry and inode caches dropped (and, for the caches, an empty cache "
         "dir); warm-disk: caches dropped, cache dir kept; warm-page: the same run once "
         "before; restart: a new daemon on the cache dir the others left, caches dropped; "
         "efs-warm: efs again right after its cold run (NFS attribute and name caches "
         "warm, file data dropped at open as close-to-open requires)", ""]
    for wl, title in WORKLOADS:
        L += ["## %s" % title, "",
              "| setup | seconds | vs efs | vs local | emu requests (L/G/O/R) | notes |",
              "| --- | --- | --- | --- | --- | --- |"]
        efs = get("efs", wl)
        for s in SETUP_ORDER:
            m = med.get((s, wl))
            if not m:
                continue
            warm_page = s.endswith("-warm-page") or s in ("local-warm",)
            loc = get("local-warm" if warm_page else "local-cold", wl)
            rq = m["req"]
            req = "–" if rq["lookups"] is None else "%d / %d / %d / %d" % (
                rq["lookups"], rq["getattrs"], rq["opens"], rq["readdirs"])
            rng = "" if m["n"] < 2 else " (%.2f–%.2f)" % (m["min"], m["max"])
            notes = "; ".join(m["notes"] + (["%d failed" % m["failed"]] if m["failed"] else []))
            L.append("| %s | %s%s | %s | %s | %s | %s |" % (s, _f(m["median"]), rng,
                                                           _x(m["median"], efs),
                                                           _x(m["median"], loc), req, notes))
        L.append("")

    res = []

    def target(name, v, ref, k):
        met = None if v is None or ref is None else v <= k * ref
        res.append((name, met, "%s vs %s (limit %s)" % (_f(v), _f(ref),
                                                        _f(None if ref is None else k * ref))))

    def lookups(s, wl):
        m = med.get((s, wl))
        return None if not m else m["req"]["lookups"]

    # Issue 17's "done when" (the relaxed rows are ttl=never or -o immutable).
    imp = "import"
    efs_i, lw_i, lc_i = get("efs", imp), get("local-warm", imp), get("local-cold", imp)
    target("relaxed warm-page import ≤ 1.2 × local warm", get("relaxed-warm-page", imp), lw_i, 1.2)
    target("relaxed warm-disk import ≤ 1.5 × local cold", get("relaxed-warm-disk", imp), lc_i, 1.5)
    target("relaxed restart import ≤ 1.5 × local cold", get("relaxed-restart", imp), lc_i, 1.5)
    n = lookups("relaxed-restart", imp)
    res.append(("relaxed restart import: 0 LOOKUPs at efs-emu",
                None if n is None else n == 0, "–" if n is None else "%d" % n))
    target("default warm-page import ≤ 0.35 × efs", get("efscache-warm-page", imp), efs_i, 0.35)
    target("default cold import ≤ 0.6 × efs", get("efscache-cold", imp), efs_i, 0.6)
    for mode in ("efscache", "relaxed"):
        for st in ("warm-disk", "warm-page", "restart"):
            ref = get("local-warm" if st == "warm-page" else "local-cold", "stat")
            target("%s %s stat ≤ 2 × local %s" % (mode, st, "warm" if st == "warm-page" else "cold"),
                   get("%s-%s" % (mode, st), "stat"), ref, 2.0)
    for wl, _ in WORKLOADS:
        for mode in ("efscache", "relaxed"):
            for st in ("cold", "warm-disk", "warm-page", "restart"):
                r = get("rclone-" + st, wl)
                target("%s %s %s faster than rclone %s" % (mode, st, wl, st),
                       get("%s-%s" % (mode, st), wl), r, 1.0)
    L += ["## Targets (issue 17)", "", "| target | result | measured |", "| --- | --- | --- |"]
    for name, met, detail in res:
        L.append("| %s | %s | %s |" % (name, "n/a" if met is None else
                                      ("met" if met else "**missed**"), detail))
    notes = meta.get("notes") or []
    if notes:
        L += ["", "Notes:", ""] + ["- " + n for n in notes]
    text = "\n".join(L) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(text)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, a = argv[1], argv[2:]
    if cmd == "gen":
        gen(a[0], *(int(x) for x in a[1:5]))
    elif cmd == "code":
        sys.stdout.write(code(a[0]))
    elif cmd == "emu":
        print(emu(a[0]) if a[0] != "-" else " ".join("-" for _ in EMU_KEYS))
    elif cmd == "report":
        report(a[0], a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
