#!/usr/bin/env python3
"""Check the core's layering: no module imports a higher layer, and no module cycles.

Layers, lowest first (see the table in src/lib.rs): error, kernels, io, storage,
train, monitor, py. A module is a file under src/; its imports are the
``crate::a::b`` paths it names outside its ``#[cfg(test)]`` module (tests may use
anything). Exits 1 and lists every violation and cycle found.

    python scripts/check_layers.py [SRC_DIR]
"""

from __future__ import annotations

import pathlib
import re
import sys

LAYERS = ["error", "kernels", "io", "storage", "train", "monitor", "py"]
PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)")
USE_GROUP = re.compile(r"\buse\s+crate::([a-z_][a-z0-9_:]*)::\{([^;]*)\}", re.S)


def module_of(src: pathlib.Path, f: pathlib.Path) -> tuple[str, ...]:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def non_test_code(text: str) -> str:
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)
    return text[: cut.start()] if cut else text


def main(argv: list[str]) -> int:
    src = pathlib.Path(argv[1] if len(argv) > 1 else "src")
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    problems: list[str] = []
    for mod, f in modules.items():
        code = non_test_code(f.read_text())
        paths = [p.split("::") for p in PATH.findall(code)]
        for prefix, group in USE_GROUP.findall(code):
            for item in re.split(r"[,\s]+", group):
                item = item.strip()
                if item and item != "self" and re.match(r"[a-z_]", item):
                    paths.append(prefix.split("::") + item.split("::"))
        for p in paths:
            # The longest prefix naming a module is the dependency.
            target = None
            for k in range(len(p), 0, -1):
                if tuple(p[:k]) in modules:
                    target = tuple(p[:k])
                    break
            if target is None or target == mod or mod[: len(target)] == target:
                continue
            graph[mod].add(target)
    def layer(m: tuple[str, ...]) -> int:
        return LAYERS.index(m[0]) if m and m[0] in LAYERS else -1
    for mod, deps in graph.items():
        if mod and mod[0] not in LAYERS:
            problems.append(f"{modules[mod]}: module {'::'.join(mod)} is in no layer {LAYERS}")
        for d in sorted(deps):
            if layer(d) > layer(mod):
                problems.append(
                    f"{modules[mod]}: {'::'.join(mod)} (layer {mod[0]}) imports "
                    f"{'::'.join(d)} (higher layer {d[0]})"
                )
    # Cycles between modules (Tarjan's strongly connected components).
    index: dict[tuple[str, ...], int] = {}
    low: dict[tuple[str, ...], int] = {}
    stack: list[tuple[str, ...]] = []
    on: set[tuple[str, ...]] = set()
    counter = [0]

    def strong(v: tuple[str, ...]) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                names = ", ".join(sorted("::".join(c) for c in comp))
                problems.append(f"module cycle: {names}")

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering problem(s)", file=sys.stderr)
        return 1
    print(f"layers ok: {len(modules)} modules, no upward import, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
