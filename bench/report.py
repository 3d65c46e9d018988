#!/usr/bin/python3
"""Collect and report the side-by-side all-reduce benchmark (bench/run_bench.sh).

    report.py collect --impl NAME --peers N --rc RC --stdout FILE --stderr FILE [--cmd TEXT]
        Reads one implementation's run: every stdout line that parses as a JSON object becomes
        one record on our stdout (impl and peers filled in when missing); a non-zero RC, or
        no result at all, adds an error record carrying the last lines of its stderr.

    report.py meta [--note TEXT]
        Prints one record describing the machine and the moment (load, cores, kernel).

    report.py report RESULTS.jsonl [--md OUT.md]
        Prints the table (size, peers, median time and bus bandwidth of each implementation,
        ratios starling/gloo and starling/openmpi) and writes it as markdown.

Standard library only: runs with any python3.
"""

import argparse
import datetime
import json
import os
import platform
import sys

IMPLS = ["starling", "starling-aead", "starling-tcp", "gloo", "openmpi", "openmpi-sm"]
RATIOS = ["gloo", "openmpi", "openmpi-sm"]  # starling's speed against each of these


def fmt_size(n):
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return "%d %s" % (n // mult, unit)
    return "%d B" % n


def fmt_time(t):
    if t is None:
        return "n/a"
    if t < 1e-3:
        return "%.1f us" % (t * 1e6)
    if t < 1.0:
        return "%.2f ms" % (t * 1e3)
    return "%.3f s" % t


def fmt_bw(bw):
    if bw is None:
        return "n/a"
    if bw >= 0.1:
        return "%.2f" % bw
    return "%.3g" % bw


def tail(path, nlines=3, width=300):
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    text = " | ".join(lines[-nlines:])
    return text[-width:]


def cmd_collect(a):
    records = 0
    try:
        with open(a.stdout, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict) or "bytes" not in rec:
                    continue
                rec["impl"] = a.impl  # the run's label (starling and starling-aead alike)
                rec.setdefault("peers", a.peers)
                print(json.dumps(rec))
                records += 1
    except OSError:
        pass
    if a.rc != 0 or records == 0:
        if a.rc == 127 and a.error:
            why = "unavailable"
        elif a.rc == 124:
            why = "timed out"
        elif a.rc != 0:
            why = "exit status %d" % a.rc
        else:
            why = "no results"
        detail = a.error or tail(a.stderr)
        rec = {"impl": a.impl, "peers": a.peers, "error": why + (": " + detail if detail else "")}
        if a.cmd:
            rec["cmd"] = a.cmd
        print(json.dumps(rec))
    return 0


def cmd_meta(a):
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = []
    print(json.dumps({"meta": {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(), "kernel": platform.release(),
        "loadavg": " ".join(load), "note": a.note or ""}}))
    return 0


def load_records(path):
    results, errors, metas = {}, [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "meta" in rec:
                metas.append(rec["meta"])
            elif "error" in rec:
                errors.append(rec)
            elif all(k in rec for k in ("impl", "peers", "bytes", "median_s")):
                # The last measurement of a (impl, peers, size) wins.
                results[(rec["impl"], int(rec["peers"]), int(rec["bytes"]))] = rec
    return results, errors, metas


def render(results, errors, metas):
    impls = IMPLS + sorted({k[0] for k in results} - set(IMPLS))
    keys = sorted({(k[1], k[2]) for k in results})  # (peers, bytes)
    # Sizes/peers an implementation failed on still get a row, from the other implementations.
    header = ["size", "peers"]
    for impl in impls:
        header += ["%s time" % impl, "%s busbw GB/s" % impl]
    header += ["starling/%s" % o for o in RATIOS] + ["starling wire/ring"]
    rows = []
    for peers, nbytes in keys:
        row = [fmt_size(nbytes), str(peers)]
        for impl in impls:
            rec = results.get((impl, peers, nbytes))
            row += [fmt_time(rec["median_s"]) if rec else "n/a",
                    fmt_bw(rec.get("busbw_GBps")) if rec else "n/a"]
        st = results.get(("starling", peers, nbytes))
        for other in RATIOS:
            ot = results.get((other, peers, nbytes))
            if st and ot and st["median_s"] > 0:
                # Speed ratio: above 1 means starling is faster.
                row.append("%.2fx" % (ot["median_s"] / st["median_s"]))
            else:
                row.append("n/a")
        sent = st.get("bytes_sent_per_peer") if st else None
        if sent is not None and peers > 1:
            ring = nbytes * 2.0 * (peers - 1) / peers
            row.append("%.3f" % (sent / ring))
        else:
            row.append("n/a")
        rows.append(row)

    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    out = ["# starling all-reduce benchmark: starling vs gloo vs OpenMPI", ""]
    if metas:
        m = metas[0]
        out.append("f32 SUM all-reduce on loopback, median over timed calls; "
                   "busbw = S*2(n-1)/n/t (1 GB = 1e9 B). Ratios are speed ratios "
                   "(time of the other / time of starling; above 1 means starling is faster). "
                   "wire/ring = bytes starling sent per peer / 2(n-1)/n*S. "
                   "starling: --security none (clear frames, as gloo and OpenMPI send); "
                   "starling-aead: the default, every frame encrypted and authenticated; both "
                   "share memory between these peers (the default on one host); "
                   "starling-tcp: every ring link on TCP (--no-shm). openmpi: its TCP "
                   "transport; openmpi-sm: its shared-memory transport (vader).")
        out.append("")
        out.append("Run %s on %s CPUs, Linux %s; load average at start %s, at end %s. %s"
                   % (m.get("date", "?"), m.get("host_cpus", "?"), m.get("kernel", "?"),
                      m.get("loadavg", "?"), metas[-1].get("loadavg", "?") if len(metas) > 1
                      else "?", m.get("note", "")))
        out.append("")
    out.append(line(header))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        out.append(line(r))
    if not rows:
        out.append("")
        out.append("(no results)")
    if errors:
        out.append("")
        out.append("Not available (n/a):")
        out.append("")
        for e in errors:
            out.append("- %s, %s peers: %s" % (e.get("impl", "?"), e.get("peers", "?"),
                                              e["error"]))
    return "\n".join(out) + "\n"


def cmd_report(a):
    results, errors, metas = load_records(a.results)
    text = render(results, errors, metas)
    sys.stdout.write(text)
    if a.md:
        os.makedirs(os.path.dirname(os.path.abspath(a.md)), exist_ok=True)
        with open(a.md, "w") as f:
            f.write(text)
        print("\nwritten to %s" % a.md)
    return 0


def main():
    ap = argparse.ArgumentParser(description="collect and report bench/run_bench.sh results")
    sub = ap.add_subparsers(dest="action", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--impl", required=True)
    c.add_argument("--peers", type=int, required=True)
    c.add_argument("--rc", type=int, required=True)
    c.add_argument("--stdout", required=True)
    c.add_argument("--stderr", required=True)
    c.add_argument("--cmd", default="")
    c.add_argument("--error", default="", help="error text to use instead of stderr's tail")
    m = sub.add_parser("meta")
    m.add_argument("--note", default="")
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("--md")
    a = ap.parse_args()
    return {"collect": cmd_collect, "meta": cmd_meta, "report": cmd_report}[a.action](a)


if __name__ == "__main__":
    sys.exit(main())
