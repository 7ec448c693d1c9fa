"""The rooms' import direction, read from the source (every import statement, in-function ones too):
no cycle among the project's modules, the library never imports the benchmarks, and the two data
sub-packages (multi-view clips, spatial QA) share `shards/` but never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each import root lives (setup.cfg package_dir).
ROOMS = {"g2vlm": ROOT / "src" / "g2vlm", "g2vlm.datamodules": ROOT / "datamodules",
         "g2vlm.callbacks": ROOT / "callbacks", "g2vlm.benchmarks": ROOT / "benchmarks"}


def project_modules() -> dict[str, Path]:
    """{dotted module name: file} of every project module (packages by their __init__.py)."""
    modules = {}
    for prefix, folder in ROOMS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports: `import a.b`, `from a.b import c` (a.b.c when c is a module, else a.b),
    relative imports resolved against `name`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from pkg import name`: the module is pkg
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_finds_a_cycle_and_a_relative_import(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    graph = {"pkg.a": imported_modules("pkg.a", tmp_path / "a.py", known),
             "pkg.b": imported_modules("pkg.b", tmp_path / "b.py", known)}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_among_the_projects_modules():
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_benchmarks():
    graph = import_graph()
    offenders = {name: sorted(t for t in targets if t.startswith("g2vlm.benchmarks"))
                 for name, targets in graph.items() if not name.startswith("g2vlm.benchmarks")}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_multiview_and_qa_data_never_import_each_other():
    graph = import_graph()
    rooms = ("g2vlm.datamodules.multiview", "g2vlm.datamodules.qa")
    crossings = {name: sorted(t for t in targets if t.startswith(other))
                 for name, targets in graph.items()
                 for room, other in (rooms, rooms[::-1]) if name.startswith(room)}
    assert {name: targets for name, targets in crossings.items() if targets} == {}


def test_every_in_function_import_of_a_project_name_resolves():
    """In-function imports run only when their branch does: each `from g2vlm... import name` must name a module
    or an attribute that exists (a moved module otherwise fails in a user's run, not at import time)."""
    import importlib
    import importlib.util

    unresolved = []
    for path in project_modules().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("g2vlm")):
                continue
            module = importlib.import_module(node.module)
            unresolved += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}" for alias in node.names
                           if not hasattr(module, alias.name)
                           and importlib.util.find_spec(f"{node.module}.{alias.name}") is None]
    assert unresolved == []
