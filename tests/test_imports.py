"""A one-way house: app -> zoo -> rnnha. Importing the library pulls in neither the catalogue nor the UI,
importing the catalogue does not pull in the UI, and no import cycle remains between the project's modules.

The graph is the imports that run when a module is imported (module level, `if TYPE_CHECKING:` left
out). An import inside a function runs when it is called; in rnnha the only ones that reach the zoo are
in command lines (`main` and its helpers), the outer ring that resolves model names for the user.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("rnnha", "zoo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    found["app"] = REPO / "app.py"
    return found


def _absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, *, functions: bool) -> set[str]:
    """The project modules that `name` imports: at import time, or (functions=True) inside functions."""
    known = modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if functions:
        nodes = [n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)]
    else:
        nodes, stack = [], list(tree.body)
        while stack:  # module level, through if/try/with blocks, not into functions or TYPE_CHECKING
            node = stack.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                stack += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                          *[h for handler in getattr(node, "handlers", []) for h in handler.body]]
            nodes.append(node)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, path, node)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from rnnha.data import x` -> rnnha.data
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own parent
                found.add(target)
    return found


def test_no_import_cycle_between_the_projects_modules():
    graph = {name: imports(name, path, functions=False) for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt])
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["app"] & {"zoo"} and not graph["zoo"] & {"app"}


def test_the_house_is_one_way():
    for name, path in modules().items():
        at_import = imports(name, path, functions=False)
        if name.startswith("rnnha"):
            assert not {m for m in at_import if m == "app" or m.startswith("zoo")}, name
        if name.startswith("zoo"):
            assert "app" not in at_import, name
    # inside functions, rnnha reaches the zoo only from its command lines
    reaching = {}
    for name, path in modules().items():
        if not name.startswith("rnnha"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and any(
                    isinstance(n, ast.ImportFrom) and (n.module or "").startswith("zoo")
                    for n in ast.walk(function)):
                reaching.setdefault(name, []).append(function.name)
    assert all(f == "main" or f.startswith("_named") for fs in reaching.values() for f in fs), reaching


OUTWARD = {  # module -> what importing it must not import
    "rnnha": ("zoo", "gradio", "app"),
    "rnnha.model": ("zoo", "gradio", "app"),
    "rnnha.train": ("zoo", "gradio", "app"),
    "rnnha.evaluate": ("zoo", "gradio", "app"),
    "rnnha.export": ("zoo", "gradio", "app"),
    "rnnha.pretrained": ("zoo", "gradio", "app"),
    "rnnha.service": ("zoo", "gradio", "app"),
    "zoo": ("gradio", "app"),
}


@pytest.fixture(scope="module")
def imported():
    """Each module of OUTWARD imported in a fresh interpreter, all at once (each spends seconds importing
    torch): module -> (return code, stdout, stderr)."""
    processes = {module: subprocess.Popen(
        [sys.executable, "-c", f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for module, absent in OUTWARD.items()}
    results = {}
    try:
        for module, process in processes.items():
            stdout, stderr = process.communicate(timeout=300)
            results[module] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


@pytest.mark.parametrize("module", list(OUTWARD))
def test_importing_pulls_in_nothing_outward(module, imported):
    returncode, stdout, stderr = imported[module]
    assert returncode == 0, stderr[-2000:]
    assert stdout.strip() == "[]", f"importing {module} imported {stdout.strip()}"
