"""nada's modules import each other without cycles; `python tests/test_import_cycles.py` prints the whole graph report.

Imports are read with `ast` (nothing is imported): module-level ones (also under ``if TYPE_CHECKING:`` and
``try:``) form the graph that must stay acyclic; imports inside functions are listed apart, with their cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, src: Path = SRC) -> str:
    """Dotted module name of a file under `src` (a package's __init__.py is the package)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The nada modules one import statement names (`from pkg import mod` names pkg.mod when that is a module)."""
    if isinstance(node, ast.Import):
        bases = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = here.split(".")[: len(here.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        bases = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for name in bases:
        while name and name not in known:  # `import nada.x.y` also names nada.x.y's nearest known module
            name = name.rpartition(".")[0]
        if name.startswith("nada"):
            yield name


def import_edges(src: Path = SRC) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level, function-level) imports between nada modules: module -> the modules it imports."""
    files = {module_name(p, src): p for p in sorted((src / "nada").rglob("*.py"))}
    known = set(files)
    top: dict[str, set[str]] = {m: set() for m in files}
    inner: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, mod, path.name == "__init__.py", known):
                    if target != mod and not mod.startswith(target + "."):  # a package's own __init__ is no edge
                        (inner if id(node) in lazy else top)[mod].add(target)
    return top, inner


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def merged(a: dict[str, set[str]], b: dict[str, set[str]]) -> dict[str, set[str]]:
    """The union of two import graphs."""
    return {m: a.get(m, set()) | b.get(m, set()) for m in set(a) | set(b)}


def test_module_level_imports_have_no_cycle():
    top, _ = import_edges()
    assert len(top) > 40 and sum(map(len, top.values())) > 100  # the scan really read the package
    assert cycles(top) == []


def test_cycle_finder_sees_a_planted_cycle(tmp_path):
    pkg = tmp_path / "nada"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from nada.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("def f():\n    import nada.a\n")
    top, inner = import_edges(tmp_path)
    assert top["nada.a"] == {"nada.sub.b"} and top["nada.sub.b"] == {"nada.c"} and inner["nada.c"] == {"nada.a"}
    assert cycles(top) == []
    assert cycles(merged(top, inner)) == [["nada.a", "nada.c", "nada.sub.b"]]


def report() -> str:
    """Every function-level import between nada modules, and the cycles of both graphs."""
    top, inner = import_edges()
    lines = [f"module-level imports: {sum(map(len, top.values()))}, cycles: {cycles(top)}"]
    lines.append(f"function-level imports: {sum(map(len, inner.values()))}")
    lines += [f"  {m} -> {', '.join(sorted(t))}" for m, t in sorted(inner.items()) if t]
    lines.append(f"cycles counting function-level imports too: {cycles(merged(top, inner))}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(1 if cycles(import_edges()[0]) else 0)
