"""The package's import graph: no circles anywhere in tsn_dali/, and the data path's
stages import only downward (docs/ARCHITECTURE.md). Every import counts, including those
inside functions: a lazy import still ties two modules together."""
import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tsn_dali"

# What each part may not import (prefixes of module names).
FORBIDDEN = {
    "tsn_dali.data": ("tsn_dali.models", "tsn_dali.engine", "tsn_dali.train", "tsn_dali.test",
                      "tsn_dali.bench", "tsn_dali.demo", "tsn_dali.soak"),
    "tsn_dali.data.media": ("tsn_dali.data.index", "tsn_dali.data.plan", "tsn_dali.data.render"),
    "tsn_dali.data.index": ("tsn_dali.data.plan", "tsn_dali.data.render"),
    "tsn_dali.data.plan": ("tsn_dali.data.render",),
    "tsn_dali.errors": ("tsn_dali",),
    "tsn_dali.config": ("tsn_dali.data", "tsn_dali.models", "tsn_dali.engine"),
    "tsn_dali.models": ("tsn_dali.engine", "tsn_dali.train", "tsn_dali.test"),
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(path: Path, package: str):
    """``(line, [dotted names])`` of each import in ``path``'s body (functions included):
    ``import a.b`` names ``a.b``; ``from a import b`` names ``a`` and ``a.b`` (b a module or a
    name of a); relative imports resolved against ``package``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports_of(path: Path, modules, root: Path = PACKAGE) -> set:
    """The package's modules that ``path`` imports anywhere in its body."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for _, targets in import_statements(path, package):
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict:
    files = [Path(d) / f for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")]
    modules = {module_name(f, root) for f in files}
    return {module_name(f, root): imports_of(f, modules, root) for f in files}


def find_cycle(graph: dict):
    """One import circle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_parts_import_only_downward(part):
    bad = [f"{mod} imports {dep}" for mod, deps in import_graph().items()
           if mod == part or mod.startswith(part + ".")
           for dep in deps for forbidden in FORBIDDEN[part]
           if (dep == forbidden or dep.startswith(forbidden + ".")) and not dep.startswith(part + ".")]
    assert not bad, "; ".join(sorted(bad))


def test_cycle_finder_sees_a_circle(tmp_path):
    """The check can fail: a package whose a imports b (inside a function) and b imports a."""
    pkg = tmp_path / "tsn_dali"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from tsn_dali.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text("import tsn_dali.a\n")
    graph = import_graph(pkg)
    assert "tsn_dali.sub.b" in graph["tsn_dali.a"]
    assert graph["tsn_dali.sub.b"] == {"tsn_dali.a"}
    assert find_cycle(graph) in (["tsn_dali.a", "tsn_dali.sub.b", "tsn_dali.a"],
                                 ["tsn_dali.sub.b", "tsn_dali.a", "tsn_dali.sub.b"])
    (pkg / "sub" / "b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_folder_crowded():
    """No folder of the package holds more than 13 modules (``__init__`` not counted)."""
    for folder, _, files in os.walk(PACKAGE):
        modules = [f for f in files if f.endswith(".py") and f != "__init__.py"]
        assert len(modules) <= 13, f"{folder}: {len(modules)} modules"


def old_path_imports(folder: Path) -> list:
    """``file:line: module`` for every import of a module path that moved in 0.2."""
    from tsn_dali.data import MOVED

    old = {f"tsn_dali.data.{name}" for name in MOVED}
    found = []
    for path in sorted(folder.rglob("*.py")):
        name = module_name(path, folder) if folder.name == "tsn_dali" else ""
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, targets in import_statements(path, package):
            found += [f"{path}:{line}: {t}" for t in targets if any(t == o or t.startswith(o + ".") for o in old)]
    return found


@pytest.mark.parametrize("folder", ["tsn_dali", "tests", "benchmarks", "examples"])
def test_nothing_of_ours_imports_an_old_path(folder):
    root = PACKAGE.parent / folder
    if not root.exists():
        pytest.skip(f"no {folder}/")
    assert old_path_imports(root) == []


def test_old_path_finder_sees_relative_imports(tmp_path):
    """The check can fail: a relative import of a moved module is found."""
    pkg = tmp_path / "tsn_dali"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text("from .data.planner import ClipPlanner\nfrom .data.plan import ClipPlan\n")
    assert old_path_imports(pkg) == [f"{pkg / 'tool.py'}:1: tsn_dali.data.planner",
                                      f"{pkg / 'tool.py'}:1: tsn_dali.data.planner.ClipPlanner"]


def test_old_module_paths_import_the_moved_modules_with_a_warning():
    import importlib
    import sys
    import warnings

    import tsn_dali.data
    from tsn_dali.data.render import order

    sys.modules.pop("tsn_dali.data.order", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("tsn_dali.data.order")
    assert old is order  # the same module: classes and monkeypatches are shared
    assert any(issubclass(w.category, FutureWarning) and "tsn_dali.data.render.order" in str(w.message)
               for w in caught)
    for old_name, new_name in tsn_dali.data.MOVED.items():
        assert importlib.util.find_spec(f"tsn_dali.data.{new_name}") is not None, new_name
    assert importlib.util.find_spec("tsn_dali.data.no_such_module") is None


def test_old_synthetic_command_still_runs():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "tsn_dali.data.synthetic", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout and "moved to tsn_dali.data.media.synthetic" in run.stderr


def test_every_package_says_its_contract():
    for folder, _, files in os.walk(PACKAGE):
        if "__init__.py" in files and "__pycache__" not in folder:
            tree = ast.parse((Path(folder) / "__init__.py").read_text())
            doc = ast.get_docstring(tree)
            assert doc and len(doc) > 40, f"{folder}/__init__.py: no docstring stating its contract"
