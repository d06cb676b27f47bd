#!/usr/bin/env python3
"""Summarize a kernel_trace CSV (tools/kernel_trace/README.md).

Kernels are sorted by start and cut into bursts wherever the GPU sat idle for
longer than --gap-us: in a decode benchmark each decode step is one burst and
the idle stretch between bursts is the host's work.  For the kept bursts this
prints burst durations, the gaps between bursts, time per kernel, and the GPU
idle time *inside* bursts, charged to the kernel that ends each idle stretch
(the launch the GPU was waiting for).

Idle is measured against the latest end so far, not the previous kernel's
end, so kernels overlapping on other streams never count as idle.

Standard library only; names are demangled with c++filt when it is on PATH.
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict, namedtuple

Kernel = namedtuple("Kernel", "start end name")

NAME_LIMIT = 60
TOP_GAP_KERNELS = 8


# ---------------------------------------------------------------- reading

def read_trace(path):
    """Timed kernels, plus counts of what was skipped (for the header line)."""
    kernels, memcpys, untimed = [], 0, 0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] != "kernel":
                memcpys += 1
                continue
            start, end = int(row["start_ns"]), int(row["end_ns"])
            if start == 0 and end == 0:  # CUPTI could not time it
                untimed += 1
                continue
            kernels.append(Kernel(start, end, row["name"]))
    return kernels, memcpys, untimed


# ---------------------------------------------------------------- bursts

def split_bursts(kernels, gap_ns):
    """Lists of kernels (sorted by start) separated by idle > gap_ns."""
    bursts, frontier = [], None
    for k in sorted(kernels, key=lambda k: (k.start, k.end)):
        if frontier is None or k.start - frontier > gap_ns:
            bursts.append([])
            frontier = k.end
        bursts[-1].append(k)
        frontier = max(frontier, k.end)
    return bursts


def burst_span(burst):
    return burst[0].start, max(k.end for k in burst)


def inner_gaps(burst):
    """(idle ns, name of the kernel after it) for each idle stretch in a burst."""
    gaps, frontier = [], burst[0].end
    for k in burst[1:]:
        if k.start > frontier:
            gaps.append((k.start - frontier, k.name))
        frontier = max(frontier, k.end)
    return gaps


def select_bursts(bursts, min_kernels, last):
    kept = [b for b in bursts if len(b) >= min_kernels]
    return kept[-last:] if last else kept


# ---------------------------------------------------------------- names

def demangle(names):
    """{mangled: demangled}; identity when c++filt is missing or fails."""
    names = sorted(set(names))
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    try:
        out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True,
                             text=True, check=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {n: n for n in names}
    if len(out) != len(names):
        return {n: n for n in names}
    return dict(zip(names, out))


def _strip_params(s):
    """'void f<a, b>(int, float)' -> 'void f<a, b>'."""
    if not s.endswith(")"):
        return s
    depth = 0
    for i in range(len(s) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(s[i], 0)
        if depth == 0:
            return s[:i] if i > 0 else s
    return s


def _strip_return_type(s):
    """'void ns::f<a, b>' -> 'ns::f<a, b>': cut at the last space outside brackets."""
    depth, cut = 0, 0
    for i, c in enumerate(s):
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth = max(0, depth - 1)
        elif c == " " and depth == 0:
            cut = i + 1
    return s[cut:]


def short_name(demangled, limit=NAME_LIMIT):
    s = _strip_return_type(_strip_params(demangled.strip())) or demangled
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ---------------------------------------------------------------- summary

def _us(ns):
    return ns / 1e3


def _kernel_table(kept, display):
    launches, total = defaultdict(int), defaultdict(int)
    for b in kept:
        for k in b:
            launches[k.name] += 1
            total[k.name] += k.end - k.start
    n = len(kept)
    mean_burst = statistics.mean(burst_span(b)[1] - burst_span(b)[0] for b in kept)
    rows = []
    for name in sorted(total, key=lambda m: (-total[m], m)):
        rows.append({
            "name": display[name], "mangled": name,
            "launches_per_burst": launches[name] / n,
            "us_per_launch": _us(total[name]) / launches[name],
            "us_per_burst": _us(total[name]) / n,
            "pct_of_burst": 100.0 * total[name] / n / mean_burst if mean_burst else 0.0,
        })
    return rows


def _gap_summary(kept, display):
    per_burst = [inner_gaps(b) for b in kept]
    sums = [sum(g for g, _ in gaps) for gaps in per_burst]
    by_next, count = defaultdict(int), defaultdict(int)
    for gaps in per_burst:
        for g, name in gaps:
            by_next[name] += g
            count[name] += 1
    n, total = len(kept), sum(sums)
    top = sorted(by_next, key=lambda m: (-by_next[m], m))[:TOP_GAP_KERNELS]
    return {
        "mean_us_per_burst": _us(statistics.mean(sums)),
        "median_us_per_burst": _us(statistics.median(sums)),
        "gaps_per_burst": sum(len(g) for g in per_burst) / n,
        "by_next_kernel": [{
            "name": display[m], "mangled": m,
            "us_per_burst": _us(by_next[m]) / n,
            "gaps_per_burst": count[m] / n,
            "pct_of_gap": 100.0 * by_next[m] / total if total else 0.0,
        } for m in top],
    }


def summarize(kernels, gap_us=40.0, min_kernels=1, last=0, display=None):
    bursts = split_bursts(kernels, gap_us * 1e3)
    kept = select_bursts(bursts, min_kernels, last)
    out = {"gap_us": gap_us, "min_kernels": min_kernels, "last": last,
           "kernels": len(kernels), "bursts_found": len(bursts), "bursts": len(kept)}
    if not kept:
        return out
    if display is None:
        display = {n: short_name(d) for n, d in demangle(k.name for k in kernels).items()}
    spans = [burst_span(b) for b in kept]
    between = [spans[i][0] - spans[i - 1][1] for i in range(1, len(spans))]
    out.update({
        "kernels_per_burst": statistics.mean(len(b) for b in kept),
        "median_burst_us": _us(statistics.median(e - s for s, e in spans)),
        "mean_burst_us": _us(statistics.mean(e - s for s, e in spans)),
        "median_between_us": _us(statistics.median(between)) if between else None,
        "per_kernel": _kernel_table(kept, display),
        "inner_gaps": _gap_summary(kept, display),
    })
    return out


# ---------------------------------------------------------------- printing

def _fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def print_text(s, path, memcpys, untimed, f=sys.stdout):
    def p(*a):
        print(*a, file=f)

    p(f"{path}: {s['kernels']} timed kernels ({untimed} untimed skipped, {memcpys} memcpys ignored)")
    p(f"bursts (idle > {s['gap_us']:g} us): {s['bursts_found']} found, {s['bursts']} kept"
      f" (min {s['min_kernels']} kernels, last {s['last'] or 'all'})")
    if not s["bursts"]:
        return
    p(f"kernels per burst: {s['kernels_per_burst']:.1f}")
    p(f"burst duration: median {s['median_burst_us']:.1f} us, mean {s['mean_burst_us']:.1f} us")
    p(f"gap between kept bursts: median {_fmt(s['median_between_us'])} us")
    p("")
    w = NAME_LIMIT
    p(f"{'kernel':<{w}} {'launch/burst':>12} {'us/launch':>10} {'us/burst':>10} {'%burst':>7}")
    for r in s["per_kernel"]:
        p(f"{r['name']:<{w}} {r['launches_per_burst']:>12.2f} {r['us_per_launch']:>10.2f}"
          f" {r['us_per_burst']:>10.1f} {r['pct_of_burst']:>7.1f}")
    g = s["inner_gaps"]
    p("")
    p(f"GPU idle inside bursts: mean {g['mean_us_per_burst']:.1f} us/burst"
      f" (median {g['median_us_per_burst']:.1f}), {g['gaps_per_burst']:.1f} gaps/burst;"
      f" by the kernel after the gap (top {TOP_GAP_KERNELS}):")
    p(f"{'next kernel':<{w}} {'gaps/burst':>12} {'us/burst':>10} {'%idle':>7}")
    for r in g["by_next_kernel"]:
        p(f"{r['name']:<{w}} {r['gaps_per_burst']:>12.2f} {r['us_per_burst']:>10.1f}"
          f" {r['pct_of_gap']:>7.1f}")


# ---------------------------------------------------------------- self-test

_A, _B, _C = "_Z6gemv_kILi128EEvPKfPfi", "_Z4normIfLi4EEvPT_i", "argmax_kernel"
_ODD = 'odd"name,x'  # exercises CSV quoting of commas and quotes


def _synthetic_rows():
    """Four 32 us bursts 1 ms apart (A, idle 2, B, idle 5, A, C overlapping on
    another stream) and a lone C 0.5 ms after burst 1."""
    rows = []
    for b in range(4):
        t = b * 1_000_000
        rows += [("kernel", t, t + 10_000, _A), ("kernel", t + 12_000, t + 15_000, _B),
                 ("kernel", t + 20_000, t + 30_000, _A), ("kernel", t + 25_000, t + 32_000, _C)]
    rows.append(("kernel", 1_500_000, 1_501_000, _C))
    rows.append(("kernel", 0, 0, _A))  # untimed
    rows.append(("memcpy", 100, 200, "HtoD"))
    rows.append(("kernel", 9_000_000, 9_000_001, _ODD))  # its own burst, at the end
    return rows


def _write_synthetic(path):
    # Same shape as kernel_trace.c writes: name quoted, '"' doubled.
    with open(path, "w") as f:
        f.write("kind,start_ns,end_ns,stream,correlation,graph_id,grid,block,name\n")
        for i, (kind, s, e, name) in enumerate(_synthetic_rows()):
            dims = "132x1x1,256x1x1" if kind == "kernel" else ","
            q = '"' + name.replace('"', '""') + '"'
            f.write(f"{kind},{s},{e},7,{i},0,{dims},{q}\n")


def _close(a, b):
    return abs(a - b) < 1e-9


def _check_names():
    assert short_name("void foo::bar<128, float>(float const*, int)") == "foo::bar<128, float>"
    assert short_name("void k<(int)128>((anonymous namespace)::P)") == "k<(int)128>"
    assert short_name("(anonymous namespace)::kern(int)") == "(anonymous namespace)::kern"
    assert short_name("argmax_kernel") == "argmax_kernel"
    long = short_name("void " + "x" * 100 + "<1>(int)")
    assert len(long) == NAME_LIMIT and long.endswith("...")
    if shutil.which("c++filt"):
        assert short_name(demangle([_A])[_A]) == "gemv_k<128>"
        assert short_name(demangle([_B])[_B]) == "norm<float, 4>"


def _check_split():
    ks = [Kernel(0, 10, "a"), Kernel(40_010, 40_020, "b"), Kernel(80_021, 80_030, "c")]
    # idle of exactly 40 us stays in the burst; 40.001 us splits it
    assert [len(b) for b in split_bursts(ks, 40_000)] == [2, 1]


def _check_summary(kernels):
    ident = {k.name: k.name for k in kernels}
    s = summarize(kernels, 40, min_kernels=2, display=ident)
    assert s["bursts_found"] == 6 and s["bursts"] == 4, s
    assert _close(s["median_burst_us"], 32) and _close(s["mean_burst_us"], 32)
    assert _close(s["median_between_us"], 968)
    rows = {r["name"]: r for r in s["per_kernel"]}
    assert [r["name"] for r in s["per_kernel"]] == [_A, _C, _B]
    assert _close(rows[_A]["launches_per_burst"], 2) and _close(rows[_A]["us_per_launch"], 10)
    assert _close(rows[_A]["us_per_burst"], 20) and _close(rows[_A]["pct_of_burst"], 62.5)
    assert _close(rows[_B]["us_per_burst"], 3) and _close(rows[_B]["pct_of_burst"], 9.375)
    assert _close(rows[_C]["us_per_launch"], 7) and _close(rows[_C]["pct_of_burst"], 21.875)
    g = s["inner_gaps"]
    assert _close(g["mean_us_per_burst"], 7) and _close(g["median_us_per_burst"], 7)
    assert _close(g["gaps_per_burst"], 2)
    nxt = {r["name"]: r for r in g["by_next_kernel"]}
    assert [r["name"] for r in g["by_next_kernel"]] == [_A, _B]
    assert _close(nxt[_A]["us_per_burst"], 5) and _close(nxt[_A]["pct_of_gap"], 500 / 7)
    assert _close(nxt[_B]["us_per_burst"], 2) and _close(nxt[_B]["gaps_per_burst"], 1)

    last = summarize(kernels, 40, min_kernels=2, last=2, display=ident)
    assert last["bursts"] == 2 and _close(last["median_between_us"], 968)

    # Unfiltered: the lone C (1 us) and the odd-named kernel are bursts too.
    # Durations 32,32,1,32,32,0.001; gaps 968,468,499,968,5968.
    every = summarize(kernels, 40, display=ident)
    assert every["bursts"] == 6
    assert _close(every["median_burst_us"], 32)
    assert _close(every["mean_burst_us"], (4 * 32 + 1 + 0.001) / 6)
    assert _close(every["median_between_us"], 968)
    assert every["per_kernel"][-1]["name"] == _ODD


def self_test():
    _check_names()
    _check_split()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.csv")
        _write_synthetic(path)
        kernels, memcpys, untimed = read_trace(path)
        assert (len(kernels), memcpys, untimed) == (18, 1, 1)
        assert any(k.name == _ODD for k in kernels)
        _check_summary(kernels)
        # the whole CLI path, text and JSON, on the same file
        with open(os.devnull, "w") as null:
            print_text(summarize(kernels, 40, 2), path, memcpys, untimed, f=null)
        json.loads(json.dumps(summarize(kernels, 40, 2)))
    print("summarize.py self-test: ok")


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="?", help="kernel_trace CSV (KERNEL_TRACE_OUT)")
    ap.add_argument("--gap-us", type=float, default=40.0,
                    help="GPU idle longer than this ends a burst (default 40)")
    ap.add_argument("--min-kernels", type=int, default=1,
                    help="ignore bursts with fewer kernels (default 1)")
    ap.add_argument("--last", type=int, default=0,
                    help="keep only the last K bursts after --min-kernels (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    ap.add_argument("--self-test", action="store_true",
                    help="check the arithmetic on a synthetic trace and exit")
    args = ap.parse_args(argv)
    if args.self_test:
        self_test()
        return 0
    if not args.csv:
        ap.error("a CSV file is required")
    if args.last < 0 or args.min_kernels < 0 or args.gap_us < 0:
        ap.error("--last, --min-kernels and --gap-us must not be negative")
    kernels, memcpys, untimed = read_trace(args.csv)
    s = summarize(kernels, args.gap_us, args.min_kernels, args.last)
    if args.json:
        s.update({"file": args.csv, "memcpys": memcpys, "untimed": untimed})
        print(json.dumps(s, indent=1))
    else:
        print_text(s, args.csv, memcpys, untimed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
