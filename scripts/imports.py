#!/usr/bin/env python3
"""Which of ember's modules use which, and any cycles: between the top-level modules
(any `crate::NAME` in src/) and, inside each directory module, between its files
(`super::NAME`, `crate::DIR::NAME`).

    scripts/imports.py        # prints the edges, then the cycles (none, we hope); exit 1 if any
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def code_of(path):
    """The file's code without comments and unit tests (tests may reach anywhere)."""
    text = re.sub(r"//.*", "", path.read_text())
    return text.split("#[cfg(test)]")[0]


def members(directory):
    """The modules of a directory: its .rs files and its subdirectories."""
    names = {p.stem for p in directory.glob("*.rs")} | {p.name for p in directory.iterdir() if p.is_dir()}
    return names - {"lib", "main", "mod", "bin"}


def graph(directory, prefix):
    """Edges between the members of `directory`; `prefix` is how code names the directory
    (`crate` at the top, `crate::record` below)."""
    mods = members(directory)
    edges = {m: set() for m in mods}
    for path in directory.rglob("*.rs"):
        rel = path.relative_to(directory).parts
        top = rel[0].removesuffix(".rs")
        if top not in mods:
            continue
        code = code_of(path)
        used = re.findall(rf"\b{re.escape(prefix)}::(\w+)", code)
        # `super::X` names a sibling in the directory's own files and in its subdirectories'
        # mod.rs (not deeper).
        if prefix != "crate" and (len(rel) == 1 or rel[1:] == ("mod.rs",)):
            used += re.findall(r"\bsuper::(\w+)", code)
        for u in used:
            if u in mods and u != top:
                edges[top].add(u)
    return edges


def cycles_of(edges):
    """Tarjan's strongly connected components: a component of more than one module is a cycle."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


sys.setrecursionlimit(10000)
all_cycles = []
levels = [(SRC, "crate", "")] + [
    (d, f"crate::{d.name}", f"{d.name}::") for d in sorted(SRC.iterdir()) if d.is_dir() and d.name != "bin"
]
for directory, prefix, label in levels:
    edges = graph(directory, prefix)
    for m in sorted(edges):
        print(f"{label + m:24} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
    all_cycles += [[label + m for m in c] for c in cycles_of(edges)]
for c in all_cycles:
    print("cycle:", " <-> ".join(c))
print(f"{len(all_cycles)} cycles")
sys.exit(1 if all_cycles else 0)
