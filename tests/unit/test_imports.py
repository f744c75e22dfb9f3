"""No import circles between Sluice's own modules (``integrations/``, ``tasks/``).

A circle is two modules that can only be understood, tested and moved together, and whose
import works or fails by the order Python happens to meet them in; it is also the sign of a
helper living in the wrong place (issue 21). The graph is read from the source with ``ast``,
never by importing anything:

- An edge is an import a module makes *when it is imported*: at module level, in a class
  body, under ``if``/``try``/``with``. An import inside a function runs only when the function
  is called (a lazy import, the way to reach a heavy or optional module), so it is no edge.
- Imports under ``if TYPE_CHECKING:`` *are* edges. A type-only circle is still two modules
  that must be read and type-checked together, and it holds only as long as the guard and
  ``from __future__ import annotations`` do: a guard dropped in a refactor is an ImportError
  at start-up. The issue counts them (``integrations/base`` reached ``mapping`` only so), and
  moving the shared piece out costs no more than the guard does.
- ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``. The
  parent packages Python runs on the way (``a/__init__.py``) are no edges of their own: a
  package's ``__init__`` is a module like any other here (its imports are its edges), and
  an implicit edge to it from each of its submodules would make a circle of every package
  that imports one of its submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("integrations", "tasks")

Graph = dict[str, dict[str, int]]  # module -> {module it imports: line of the import}


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (``a.b`` for a/b/__init__.py)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def eager_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: everything but what sits
    inside a function (or a lambda)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from eager_imports(node)


def targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool,
            known: dict[str, Path]) -> Iterator[str]:
    """The project modules one import statement of module ``name`` reaches."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            dotted = alias.name
            while dotted and dotted not in known:  # import a.b.c of a package a.b: a.b
                dotted = dotted.rpartition(".")[0]
            if dotted:
                yield dotted
        return
    if node.level:  # from . import x, from ..y import z
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    for alias in node.names:
        if f"{module}.{alias.name}" in known:
            yield f"{module}.{alias.name}"
        elif module in known:
            yield module


def graph(root: Path, packages: tuple[str, ...]) -> Graph:
    known = modules(root, packages)
    edges: Graph = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        edges[name] = {}
        for node in eager_imports(ast.parse(path.read_text(), str(path))):
            for target in targets(node, name, is_package, known):
                if target != name:
                    edges[name].setdefault(target, node.lineno)
    return edges


def components(edges: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def cycle(edges: Graph, component: list[str]) -> list[str]:
    """One shortest circle through the first module of a component, as a path back to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    for node in queue:  # breadth first, inside the component
        for child in sorted(edges[node]):
            if child == start:
                return [*paths[node], start]
            if child in members and child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"no circle through {start}")  # a component always has one


def described(edges: Graph, component: list[str]) -> str:
    """One circle of a component, each step with its line, and the modules it ties together
    (every one of them reaches every other)."""
    path = cycle(edges, component)
    steps = [f"  {a} (line {edges[a][b]}) imports {b}" for a, b in pairwise(path)]
    rest = sorted(set(component) - set(path))
    also = [f"  and with them: {', '.join(rest)}"] if rest else []
    return "\n".join([" -> ".join(path), *steps, *also])


def circles(root: Path, packages: tuple[str, ...]) -> list[str]:
    edges = graph(root, packages)
    return [described(edges, component) for component in components(edges)]


def test_the_project_has_no_import_circles() -> None:
    found = circles(ROOT, PACKAGES)
    assert not found, "import circles:\n" + "\n".join(found)


def write_tree(root: Path, files: dict[str, str]) -> None:
    """A package tree under ``root``: each path's text."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_circle_is_found_and_lazy_imports_are_not_edges(tmp_path: Path) -> None:
    """The finder itself: a circle closed under TYPE_CHECKING is found (and named with its
    lines); one closed only inside a function is not; a relative import counts."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "pkg/c.py": "import pkg.a\nclass C: ...\n",
        "pkg/d.py": "from pkg import e\n",
        "pkg/e.py": "def later():\n    from pkg import d\n",
    }
    write_tree(tmp_path, files)
    found = circles(tmp_path, ("pkg",))
    assert found == ["pkg.a -> pkg.b -> pkg.c -> pkg.a\n"
                     "  pkg.a (line 1) imports pkg.b\n"
                     "  pkg.b (line 3) imports pkg.c\n"
                     "  pkg.c (line 1) imports pkg.a"]


# The stage modules at the top of tasks/ (README's layout): each a step of a run, or a webhook
# batch. What two of them share lives in a subpackage they both import (the write stage in
# tasks/write/, batches in tasks/messages.py), never in one of them: a stage that imports
# another can only be read, tested and changed with it (issue 21, "one write stage").
STAGES = ("resync", "slicing", "ingest", "children", "finalize", "webhook")
# slicing is the producer's own part (1b: the windows a resync task reads), split out of
# resync for size; it imports no stage itself, and only resync imports it.
PARTS = {("tasks.resync", "tasks.slicing")}


def stage_imports(edges: Graph, stages: tuple[str, ...], parts: set[tuple[str, str]]
                  ) -> list[str]:
    """Each import of one stage module by another (beyond ``parts``), with its line."""
    names = {f"tasks.{stage}" for stage in stages}
    return [f"{a} (line {line}) imports {b}" for a in sorted(names & edges.keys())
            for b, line in sorted(edges[a].items()) if b in names and (a, b) not in parts]


def test_no_stage_module_imports_another() -> None:
    found = stage_imports(graph(ROOT, PACKAGES), STAGES, PARTS)
    assert not found, "stage modules importing each other:\n" + "\n".join(found)


def test_a_stage_importing_another_is_found(tmp_path: Path) -> None:
    """The rule itself: an eager import of one stage by another is found, with its line; an
    import of a shared subpackage, a lazy one, and a listed part are not."""
    files = {
        "tasks/__init__.py": "",
        "tasks/write/__init__.py": "",
        "tasks/ingest.py": "from tasks.write import x\n",
        "tasks/children.py": "from tasks import messages\nfrom tasks.ingest import y\n",
        "tasks/messages.py": "",
        "tasks/finalize.py": "def later():\n    from tasks import ingest\n",
        "tasks/resync.py": "from tasks import slicing\n",
        "tasks/slicing.py": "",
    }
    write_tree(tmp_path, files)
    edges = graph(tmp_path, ("tasks",))
    assert stage_imports(edges, STAGES, PARTS) == [
        "tasks.children (line 2) imports tasks.ingest"]
    assert stage_imports(edges, STAGES, set()) == [
        "tasks.children (line 2) imports tasks.ingest",
        "tasks.resync (line 1) imports tasks.slicing"]


def test_a_worker_does_not_import_httpx_command_line() -> None:
    """``integrations/lean.py``: httpx's own CLI (rich, pygments: 5 MB a worker process) stays
    out of the worker's imports; its stand-in's ``main`` says so instead of running."""
    import subprocess
    import sys

    code = ("import sys, tasks.app, tasks.ingest, tasks.resync, httpx\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pygments'}))\n"
            "httpx.main()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert "use the `httpx` command instead" in done.stderr
