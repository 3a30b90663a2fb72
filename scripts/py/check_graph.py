#!/usr/bin/env python3
"""Keeps the crate graph cut where ARCHITECTURE.md draws it, and the module
graph of every crate acyclic. Run by scripts/test before anything compiles
(it reads `cargo tree` and the sources only).

1. Forbidden dependencies: for each crate, the packages its normal
   dependencies must not reach, transitively (dev-dependencies are free:
   tests may link anything). The lines:
   - DataFusion and Ballista stay in `batch-sql` and `batch-cluster` (and
     the binary's `sql` / `ballista` features, and the benchmarks);
   - rdkafka stays with the crates that talk to Kafka;
   - Arrow stays with the crates that read or write Parquet (`schemas`
     turns it on only with its `arrow` feature);
   - the fuzz target (its own workspace) builds without Arrow.
2. Module cycles: no two source files of a crate use each other (directly
   or around a loop) through `crate::`/`super::`/child paths in code (doc
   links and comments are not dependencies).

Exits 1 naming every broken line, with the chain that breaks it.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATAFUSION = ("datafusion", "ballista", "ballista-core", "ballista-scheduler", "ballista-executor")
BALLISTA = ("ballista", "ballista-core", "ballista-scheduler", "ballista-executor")
KAFKA = ("rdkafka", "rdkafka-sys")
ARROW = ("arrow", "arrow-array", "parquet")

# crate -> (packages it must not reach, why)
FORBIDDEN = {
    "schemas": (DATAFUSION + KAFKA + ARROW, "the event contract is pure and Arrow-free by default"),
    "telemetry": (DATAFUSION + KAFKA + ARROW, "every service links it"),
    "playback": (DATAFUSION + KAFKA + ARROW, "token signing and verification is pure"),
    "loadgen": (DATAFUSION + KAFKA + ARROW, "the generator needs only the contract"),
    "heldout": (DATAFUSION + KAFKA + ARROW, "the held-out suite needs only the contract"),
    "ingest": (DATAFUSION + ARROW, "ingest writes JSON to Kafka"),
    "counters": (DATAFUSION + KAFKA + ARROW, "serving reads Redis without Kafka"),
    "speed": (DATAFUSION + ARROW, "the speed layer never touches the archive"),
    "infra": (DATAFUSION + ARROW, "production helpers for Kafka and Redis"),
    "store": (DATAFUSION + KAFKA, "the store's formats are read by serving and billing"),
    "archive": (DATAFUSION, "the archive writes Parquet with the parquet crate"),
    "batch": (DATAFUSION + KAFKA, "the native engine: what `up` and the scheduler run"),
    "reconcile": (DATAFUSION + KAFKA, "reconcile uses the native engine"),
    "billing": (DATAFUSION + KAFKA + ("batch",), "money and the ledger need no engine"),
    "explain": (DATAFUSION + KAFKA, "explain re-decides events with the native engine"),
    "serving": (DATAFUSION + KAFKA + ("batch", "speed"), "serving reads the store and Redis"),
    "batch-sql": (BALLISTA + KAFKA, "the SQL specification runs in one process"),
    "testkit": (DATAFUSION, "test fixtures start processes, nothing more"),
}
# The binary without features: what `scripts/up` builds.
BINARY = ("viewcount", DATAFUSION, "the default build leaves the SQL and Ballista engines to features")


def tree(package, manifest=None, features=None):
    """The set of package names `package` reaches through normal edges."""
    cmd = ["cargo", "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}"]
    if manifest:
        cmd += ["--manifest-path", manifest]
    else:
        cmd += ["-p", package]
    if features is not None:
        cmd += ["--no-default-features"] + (["--features", features] if features else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr}")
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def path_to(package, target, manifest=None):
    """How `package` reaches `target`: cargo's inverted tree, first chain."""
    cmd = ["cargo", "tree", "--locked", "-e", "normal", "-i", target, "--prefix", "none"]
    cmd += ["--manifest-path", manifest] if manifest else ["-p", package]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return " <- ".join(line.split()[0] for line in out.stdout.splitlines()[:6])


def check_dependencies():
    failures = []
    for crate, (banned, why) in FORBIDDEN.items():
        reached = tree(crate)
        for b in banned:
            if b in reached:
                failures.append(f"{crate} reaches {b} ({path_to(crate, b)}): {why}")
    name, banned, why = BINARY
    reached = tree(name, features="")
    for b in banned:
        if b in reached:
            failures.append(f"{name} (no features) reaches {b}: {why}")
    fuzz = os.path.join(ROOT, "fuzz", "Cargo.toml")
    reached = tree("viewcount-fuzz", manifest=fuzz)
    for b in ARROW:
        if b in reached:
            failures.append(f"the fuzz target reaches {b}: schemas must build without Arrow by default")
    return failures


USE = re.compile(r"\b(?:crate|super)::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def modules(src):
    """name -> text of each module file under src (nested modules by path)."""
    found = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            name = "::".join(parts) if parts not in (["lib"], ["main"]) else ""
            with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                found[name] = fh.read()
    return found


def cycles_in(src):
    """Cycles among a crate's module files. The crate root (lib.rs or
    main.rs) is left out: it declares every module and holds the crate's
    error type, which every module names. A nested module's own file
    (`x/mod.rs`) is in: a parent that uses its children must not be named
    back by them."""
    mods = modules(src)
    graph = {m: set() for m in mods if m != ""}
    for m in graph:
        # Code only: doc links and comments name a module without
        # depending on it.
        text = "\n".join(
            line for line in mods[m].split("#[cfg(test)]")[0].splitlines()
            if not line.lstrip().startswith("//")
        )
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        for group, single in USE.findall(text):
            names = [n.strip().split("::")[0] for n in group.split(",")] if group else [single]
            for n in names:
                if not n or n == "self":
                    continue
                # crate::x names the top-level module x (or a root item);
                # super::x a sibling module, or else an item of the parent.
                sibling = f"{parent}::{n}" if parent else n
                if sibling in graph and sibling != m:
                    graph[m].add(sibling)
                elif n in graph and n != m:
                    graph[m].add(n)
                elif parent and f"super::{n}" in text:
                    graph[m].add(parent)
        for child in (c for c in graph if c.rsplit("::", 1)[0] == m and "::" in c):
            short = child.rsplit("::", 1)[1]
            if re.search(rf"(?<![:\w]){short}::", text):
                graph[m].add(child)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def check_cycles():
    failures = []
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isfile(os.path.join(ROOT, crate, "Cargo.toml")) or not os.path.isdir(src):
            continue
        for comp in cycles_in(src):
            failures.append(f"{crate}: the modules {', '.join(comp)} name each other in a cycle")
    return failures


def main():
    failures = check_dependencies() + check_cycles()
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    if failures:
        print("the crate or module graph crossed a line ARCHITECTURE.md draws; see scripts/py/check_graph.py", file=sys.stderr)
        sys.exit(1)
    print(f"crate graph: {len(FORBIDDEN) + 2} lines hold; module graphs: no cycles")


if __name__ == "__main__":
    main()
