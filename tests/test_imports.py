"""No import circles inside susl_cli.

The import graph is read from the source (every `import` statement, those under
`TYPE_CHECKING` and inside functions included), so a circle is found without running code and
whichever module is imported first. A circle works or breaks depending on which module a
program imports first; with none, every module imports on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import susl_cli

PACKAGE_DIR = Path(susl_cli.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def names_bound_before_imports(path: Path) -> set[str]:
    """Names a package's __init__ assigns before it imports anything of susl_cli: a submodule
    may import them from the package while the package is still being initialised."""
    bound: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom | ast.Import) and _imports_package(node):
            break
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    return bound


def _imports_package(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "susl_cli"
    return any(alias.name.split(".")[0] == "susl_cli" for alias in node.names)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The susl_cli modules `name` imports (an edge to a parent package is left out when only
    names bound before that package's own imports are taken from it)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in modules:
                continue
            submodules = {f"{source}.{a.name}" for a in node.names} & modules.keys()
            found.update(submodules)
            rest = {a.name for a in node.names} - {s.rsplit(".", 1)[1] for s in submodules}
            if not rest:
                continue
            if name.startswith(source + ".") and rest <= names_bound_before_imports(
                    modules[source]):
                continue
            found.add(source)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_circles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_type_checking_and_function_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from susl_cli.experiment import ExperimentPlan\n"
                      "def f():\n    from susl_cli import runs\n")
    modules = all_modules()
    assert imported_modules("susl_cli.m", source, modules) == {"susl_cli.experiment",
                                                               "susl_cli.runs"}


def test_susl_cli_has_no_import_circle():
    modules = all_modules()
    assert len(modules) > 40  # the walk found the package
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["susl_cli.experiment"] >= {"susl_cli.experiment_runs"}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
