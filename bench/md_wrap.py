#!/usr/bin/python3
"""md_wrap.py -- a filter: wraps markdown prose and list items read on stdin at 90 columns
(continuation lines indented under the item's text), as the rest of docs/results.md is;
table rows and short lines pass through unchanged. Used by the experiment scripts'
reports (bench/train_experiments.sh, bench/byzantine_experiments.sh)."""
import sys
import textwrap

WIDTH = 90


def wrap(line):
    if line.startswith("|") or len(line) <= WIDTH:
        return line
    lead = len(line) - len(line.lstrip(" -"))
    return textwrap.fill(line, width=WIDTH, subsequent_indent=" " * lead,
                         break_long_words=False, break_on_hyphens=False)


if __name__ == "__main__":
    for line in sys.stdin.read().split("\n"):
        print(wrap(line))
