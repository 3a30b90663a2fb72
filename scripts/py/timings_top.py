#!/usr/bin/env python3
"""The N crates that took longest in a `cargo build --timings` report, as a
Markdown table (unit, target, seconds), and the build's wall time.
Usage: timings_top.py cargo-timing.html [N]"""
import json
import re
import sys


def units(html):
    start = html.index("const UNIT_DATA = ") + len("const UNIT_DATA = ")
    data, _ = json.JSONDecoder().raw_decode(html[start:])
    return data


def main():
    html = open(sys.argv[1], encoding="utf-8").read()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    data = units(html)
    wall = max(u["start"] + u["duration"] for u in data)
    top = sorted(data, key=lambda u: u["duration"], reverse=True)[:n]
    print(f"{len(data)} units, {wall:.0f} s wall\n")
    print("| crate | target | seconds |\n|---|---|---|")
    for u in top:
        target = u["target"].strip() or "lib"
        print(f"| {u['name']} {u['version']} | {target} | {u['duration']:.1f} |")


if __name__ == "__main__":
    main()
