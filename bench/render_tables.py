#!/usr/bin/env python3
"""Markdown tables for docs/BENCHMARKS.md from `tgemm bench --csv` output.

    python3 bench/render_tables.py decode BENCH.csv [READPROBE.txt]
        every layer x route at M = 1..16: us (fraction of the floor) and
        speedup over the library default, and the route's largest error
        over those M (against the unquantized product); with a readprobe log, the default
        and skinny rows of each layer also show the fraction of a pure read
        of the same bytes, timed the same way (events + clean flush)
    python3 bench/render_tables.py all BENCH.csv
        every layer x M: the default's us -> the `auto` route's us, speedup
"""
import csv
import re
import sys

DECODE_M = [1, 2, 4, 8, 16]
ROUTE_NAMES = {"library": "cuBLASLt default", "skinny": "skinny bf16", "w4a16": "w4a16",
               "w4a4": "w4a4", "auto": "auto (tuned)"}


def load(path):
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        r["m"] = int(r["m"])
        for key in ("us", "x_default", "floor"):
            r[key] = float(r[key])
    return rows


def layers_in_order(rows):
    seen = []
    for r in rows:
        key = (r["layer"], r["n"], r["k"])
        if key not in seen:
            seen.append(key)
    return seen


def read_ceiling(path):
    """{weight MB: pure-read us with events + flush} from readprobe's table."""
    out = {}
    for line in open(path):
        m = re.match(r"\s*([\d.]+)\s+([\d.]+)\s+\|\s+([\d.]+)\s+\(", line)
        if m:
            out[float(m.group(1))] = float(m.group(3))
    return out


def nearest_read(ceiling, n, k):
    mb = int(n) * int(k) * 2 / 1e6
    best = min(ceiling, key=lambda x: abs(x - mb)) if ceiling else None
    return ceiling[best] if best is not None and abs(best - mb) / mb < 0.02 else None


def decode(rows, ceiling):
    print("| layer | N×K | route | " + " | ".join(f"M={m}" for m in DECODE_M) + " | err |")
    print("|---|---|---|" + "---|" * len(DECODE_M) + "---|")
    for layer, n, k in layers_in_order(rows):
        read_us = nearest_read(ceiling, n, k)
        for route in ("library", "skinny", "w4a16", "w4a4", "auto"):
            cells, err = [], 0.0
            for m in DECODE_M:
                hit = [r for r in rows if (r["layer"], r["n"], r["k"]) == (layer, n, k) and r["m"] == m
                       and r["route"] == route and (route != "library" or r["is_default"] == "yes")]
                if not hit:
                    cells.append("")
                    continue
                r = hit[0]
                err = max(err, float(r["err"]))
                cell = f"{r['us']:.1f} ({r['floor']:.2f})"
                if read_us and route in ("library", "skinny"):
                    cell += f" [{read_us / r['us']:.2f}]"
                if route != "library":
                    cell += f" {r['x_default']:.2f}×"
                    if route == "auto":
                        cell += " " + r["kernel"].split("_")[0]
                cells.append(cell)
            if any(cells):
                print(f"| {layer} | {n}×{k} | {ROUTE_NAMES[route]} | " + " | ".join(cells) + f" | {err:.2g} |")


def all_m(rows):
    ms = sorted({r["m"] for r in rows})
    print("| layer | " + " | ".join(f"M={m}" for m in ms) + " |")
    print("|---|" + "---|" * len(ms))
    short = {"library": "lib", "skinny": "skinny", "w4a16": "w4a16", "w4a4": "w4a4", "lt": "lib"}
    for layer, n, k in layers_in_order(rows):
        cells = []
        for m in ms:
            here = [r for r in rows if (r["layer"], r["n"], r["k"]) == (layer, n, k) and r["m"] == m]
            d = [r for r in here if r["route"] == "library" and r["is_default"] == "yes"]
            a = [r for r in here if r["route"] == "auto"]
            if not d or not a:
                cells.append("")
                continue
            family = a[0]["kernel"].split("_")[0]
            cells.append(f"{d[0]['us']:.1f}→{a[0]['us']:.1f} {short.get(family, family)} {a[0]['x_default']:.2f}×")
        print(f"| {layer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("decode", "all"):
        sys.exit(__doc__)
    data = load(sys.argv[2])
    if sys.argv[1] == "decode":
        decode(data, read_ceiling(sys.argv[3]) if len(sys.argv) > 3 else {})
    else:
        all_m(data)
