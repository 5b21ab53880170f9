"""The code's layers, checked with the standard library's `ast`: imports point one way and never in a circle.

Ranks, low to high: `methods` (decoders; imports nothing of the harness) and `harness` itself (its errors),
`harness.engine`, `harness.evaluation`, `harness.analysis`, `harness.orchestration`, `harness.cllm`, then
`harness.cli` on top. A module may import its own layer or lower ones, never a higher one.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "methods")
RANKS = {"methods": 0, "harness": 0, "harness.engine": 1, "harness.evaluation": 2, "harness.analysis": 3,
         "harness.orchestration": 4, "harness.cllm": 5, "harness.cli": 6}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `from pkg import module` or `import pkg.module.attr`
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def layer(module: str) -> str:
    best = max((k for k in RANKS if module == k or module.startswith(k + ".")), key=len)
    return best


def test_every_module_has_a_layer():
    assert all(layer(m) in RANKS for m in graph())


def test_methods_never_import_the_harness():
    bad = {m: sorted(d for d in deps if d.split(".")[0] == "harness")
           for m, deps in graph().items() if m.split(".")[0] == "methods"}
    assert not {m: d for m, d in bad.items() if d}


def test_imports_point_down_the_layers():
    bad = [f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph().items() for d in deps
           if RANKS[layer(d)] > RANKS[layer(m)]]
    assert not bad, "\n".join(bad)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if d.startswith(m + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
