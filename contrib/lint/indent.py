#!/usr/bin/env python3
"""contrib/lint/indent.py - one indentation style per language, as .editorconfig says.

    contrib/lint/indent.py [PATH...]     # default: every file git tracks

Rules (from .editorconfig):
  *.c, *.h                      tabs: leading whitespace is tabs, then at most 7 spaces
                                (alignment of a continuation line, " * " of a comment)
  *.sh *.py *.build *.txt *.md  spaces: no tab in the leading whitespace
  (all)                         no trailing whitespace, a final newline

Prints PATH:LINE: PROBLEM per offending line (at most 5 per file, then a count) and exits 1
when there is any; 0 when the tree is clean.  Standard library only.
"""

import os
import re
import subprocess
import sys

TABS = (".c", ".h")
SPACES = (".sh", ".py", ".build", ".txt", ".md")
TAB_LEAD = re.compile(r"^\t*( {0,7})(?=\S|$)")


def style_of(path):
    if path.endswith(TABS):
        return "tab"
    if path.endswith(SPACES):
        return "space"
    return None


def check_file(path):
    """List of (line number, problem) for one file."""
    style = style_of(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return [(0, "cannot read: %s" % e)]
    if b"\0" in data:
        return []
    problems = []
    if data and not data.endswith(b"\n"):
        problems.append((data.count(b"\n") + 1, "no final newline"))
    for n, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("utf-8", "replace")
        if line != line.rstrip(" \t\r"):
            problems.append((n, "trailing whitespace"))
        lead = line[:len(line) - len(line.lstrip(" \t"))]
        if not lead or not line.strip():
            continue
        if style == "space" and "\t" in lead:
            problems.append((n, "tab in indentation (this language indents with spaces)"))
        elif style == "tab" and not TAB_LEAD.match(line):
            problems.append((n, "space indentation (this language indents with tabs)"))
    return problems


def main(argv):
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                          text=True).stdout.strip() or "."
    if argv:
        paths = argv
    else:
        out = subprocess.run(["git", "-C", root, "ls-files"], capture_output=True,
                             text=True, check=True).stdout
        paths = [os.path.join(root, p) for p in out.splitlines()]
    bad = 0
    for p in sorted(paths):
        if style_of(p) is None or not os.path.isfile(p):
            continue
        probs = check_file(p)
        if not probs:
            continue
        bad += 1
        rel = os.path.relpath(p, root)
        for n, what in probs[:5]:
            print("%s:%d: %s" % (rel, n, what))
        if len(probs) > 5:
            print("%s: ... %d lines in all" % (rel, len(probs)))
    if bad:
        print("%d file(s) do not follow .editorconfig" % bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
