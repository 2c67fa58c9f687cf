"""The package's structure in numbers: files, largest files, wide functions, import loops, upward imports.

Run from the repository root: ``.venv/bin/python scripts/structure.py``. The floors are
ARCHITECTURE.md's table; a module may import only from its own floor or floors below.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import networkx as nx

PACKAGE = Path("src/ifcml")
MAX_PARAMETERS = 7
FLOORS = {
    "errors": 1, "progress": 1, "preprocess": 1, "readout": 1, "cells": 1,
    "outputs": 2, "executors": 2, "specs": 2,
    "io": 3,
    "features": 4, "models": 4, "simulate": 4,
    "gating": 4.5,
    "experiments": 5,
    "deploy": 6,
    "demo": 6.5,
    "cli": 7,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> float:
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """ifcml modules this one imports (type-checking-only imports included: they are still arrows)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ifcml")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("ifcml"):
                found.add(base)
    return found


def wide_functions(tree: ast.Module) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            n = len([x for x in names if x not in ("self", "cls")])
            if n > MAX_PARAMETERS:
                out.append((node.name, n))
    return out


def main() -> int:
    files = sorted(PACKAGE.rglob("*.py"))
    graph = nx.DiGraph()
    sizes, wide = {}, []
    for path in files:
        module = module_name(path)
        text = path.read_text()
        tree = ast.parse(text)
        sizes[module] = text.count("\n")
        graph.add_node(module)
        for target in imports(tree, module, path.name == "__init__.py"):
            while target not in {module_name(f) for f in files} and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module:
                graph.add_edge(module, target)
        wide += [(module, name, n) for name, n in wide_functions(tree)]
    cli_wide = [w for w in wide if w[0] == "ifcml.cli"]
    loops = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    upward = [(a, b) for a, b in graph.edges if floor(b) > floor(a)]
    print(f"files: {len(files)}, lines: {sum(sizes.values())}")
    print("largest files:")
    for module, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {n:5d}  {module}")
    print(f"functions over {MAX_PARAMETERS} parameters outside the CLI: {len(wide) - len(cli_wide)}")
    for module, name, n in wide:
        if module != "ifcml.cli":
            print(f"  {n:3d}  {module}.{name}")
    print(f"functions over {MAX_PARAMETERS} parameters in the CLI (option lists): {len(cli_wide)}")
    print(f"import loops: {len(loops)}")
    for cycle in loops:
        print("  " + " -> ".join(cycle + cycle[:1]))
    print(f"upward imports: {len(upward)}")
    for a, b in sorted(upward):
        print(f"  {a} -> {b}")
    return 1 if "--check" in sys.argv and (loops or upward or len(wide) > len(cli_wide)) else 0


if __name__ == "__main__":
    sys.exit(main())
