"""The import graph of ingest/, rag/ and finetune/, read from the source (ast, no imports
run), as Graphviz dot, and the rules of the layout checked on it.

    python scripts/import_graph.py                 # dot of the folders (rag/generation, ...)
    python scripts/import_graph.py --modules       # dot of every module
    python scripts/import_graph.py --check         # the rules below; exit 1 when one breaks
    python scripts/import_graph.py | dot -Tsvg > imports.svg      (where Graphviz is installed)

Dashed edges are imports inside functions (loaded when first needed). The rules: data
flows one way (ingest imports nothing of rag or finetune; rag imports nothing of
finetune, whose commands come through the `rag.commands` entry point); each wing of rag
imports only the core and the wings below it; the answering core (answer, prompt,
context, citations) imports no command, server or evaluation code; and no two modules
import each other at load time.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "rag", "finetune")

# What each part may import (besides itself); parts are folders, or rag's root core.
ALLOWED = {
    "ingest": {"ingest"},
    "rag": {"ingest", "rag", "rag/generation", "rag/retrieval"},
    "rag/generation": {"ingest", "rag"},
    "rag/retrieval": {"ingest", "rag"},
    "rag/evaluation": {"ingest", "rag", "rag/retrieval"},
    "rag/serve": {"ingest", "rag", "rag/generation", "rag/retrieval"},
    "rag/commands": {"ingest", "rag", "rag/generation", "rag/retrieval", "rag/evaluation",
                     "rag/serve"},
    "rag/data": set(),
    "rag/cli": {"ingest", "rag", "rag/commands"},        # the `rag` group: commands below it
    "finetune": {"ingest", "rag", "rag/generation", "rag/retrieval", "rag/evaluation",
                 "rag/commands"},
}
CORE = {"rag.answer", "rag.prompt", "rag.context", "rag.citations"}
CORE_MAY_NOT = ("rag.commands", "rag.serve", "rag.evaluation", "rag.cli", "finetune")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, lazy?) of one module: absolute and relative imports that name
    a module of ours (`from .x import y` is x.y when y is a module, else x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    lazy_nodes = {id(n) for f in ast.walk(tree)
                  if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        if isinstance(node, ast.If) and _type_checking(node):
            lazy_nodes.update(id(n) for n in ast.walk(node))
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, id(node) in lazy_nodes))
    return sorted(set(found))


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def part(module: str) -> str:
    """The folder a module belongs to: ingest, rag (the core), rag/serve, finetune, ..."""
    bits = module.split(".")
    if module in ("rag.cli", "rag.__main__"):
        return "rag/cli"
    if bits[0] == "rag" and len(bits) > 1 and bits[1] in (
            "generation", "retrieval", "evaluation", "serve", "commands", "data"):
        return f"rag/{bits[1]}"
    return bits[0]


def graph() -> dict[str, list[tuple[str, bool]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def dot(edges: dict[str, list[tuple[str, bool]]], by_module: bool) -> str:
    lines = ["digraph imports {", "  rankdir=LR; node [shape=box, fontname=Helvetica];"]
    seen: dict[tuple[str, str], bool] = {}
    for source, targets in edges.items():
        for target, lazy in targets:
            a, b = (source, target) if by_module else (part(source), part(target))
            if a != b:
                seen[(a, b)] = seen.get((a, b), True) and lazy
    for (a, b), lazy in sorted(seen.items()):
        lines.append(f'  "{a}" -> "{b}"' + (" [style=dashed];" if lazy else ";"))
    lines.append("}")
    return "\n".join(lines)


def check(edges: dict[str, list[tuple[str, bool]]]) -> list[str]:
    problems = []
    for source, targets in edges.items():
        for target, _ in targets:
            a, b = part(source), part(target)
            if a != b and b not in ALLOWED.get(a, set()):
                problems.append(f"{source} imports {target}: {a} may not import {b}")
            if source in CORE and target.startswith(CORE_MAY_NOT):
                problems.append(f"{source} imports {target}: the answering core may not")
    eager = {s: {t for t, lazy in ts if not lazy} for s, ts in edges.items()}
    for source, targets in eager.items():
        for target in targets:
            if source in eager.get(target, set()) and source < target:
                problems.append(f"{source} and {target} import each other")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", action="store_true", help="one node per module")
    ap.add_argument("--check", action="store_true", help="check the layout's rules")
    args = ap.parse_args()
    edges = graph()
    if args.check:
        problems = check(edges)
        for p in problems:
            print(p)
        print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, "
              f"{len(problems)} problem(s)")
        sys.exit(1 if problems else 0)
    print(dot(edges, args.modules))


if __name__ == "__main__":
    main()
