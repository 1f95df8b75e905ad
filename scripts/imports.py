#!/usr/bin/env python3
"""Which of ember's top-level modules use which (any `crate::NAME` in src/), and any cycles.

    scripts/imports.py        # prints the edges, then the cycles (none, we hope); exit 1 if any
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
modules = {p.stem for p in SRC.glob("*.rs")} | {p.name for p in SRC.iterdir() if p.is_dir()}
modules -= {"lib", "main", "bin"}

edges = {m: set() for m in modules}
for path in SRC.rglob("*.rs"):
    rel = path.relative_to(SRC).parts
    top = rel[0].removesuffix(".rs")
    if top not in modules:
        continue
    text = re.sub(r"//.*", "", path.read_text())
    # Unit tests may reach anywhere.
    text = text.split("#[cfg(test)]")[0]
    for used in re.findall(r"\bcrate::(\w+)", text):
        if used in modules and used != top:
            edges[top].add(used)

for m in sorted(edges):
    print(f"{m:10} -> {', '.join(sorted(edges[m])) or '(nothing)'}")

# Tarjan's strongly connected components: a component of more than one module is a cycle.
index, low, stack, on, cycles, n = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
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
            cycles.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)
for c in cycles:
    print("cycle:", " <-> ".join(c))
print(f"{len(cycles)} cycles")
sys.exit(1 if cycles else 0)
