"""The layout of the code (docs/architecture.md): doors at the top of `orchestrator/`, libraries in packages below
them, arrows that point down, no import circle (imports inside functions count), no import-time side effects, and
commands that answer `--help` and `--dry-run` without loading Ray, MLflow or torch.

The imports are read with `ast`, so every module is checked without importing it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("orchestrator", "trainables")
CLI = "orchestrator.cli"
# The packages of orchestrator/, top to bottom: a package imports only packages on a lower line (tracking and
# teacher are side by side: neither imports the other).
LAYERS = (("search",), ("results",), ("tracking", "teacher"), ("execution",), ("spec",), ("data_tools",))
HEAVY = ("torch", "torchvision", "ray", "mlflow", "pandas")
# What a module may not do when it is imported: set environment variables, choose matplotlib's backend.
SIDE_EFFECTS = ("os.environ.setdefault", "os.environ.update", "os.putenv", "matplotlib.use")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def faces() -> dict[str, dict[str, str]]:
    """Package -> public name -> the module that holds it: each package's `_MODULES` table."""
    found = {}
    for name, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_MODULES":
                table = ast.literal_eval(node.value)
                found[name] = {public: f"{name}.{module}" for module, names in table.items() for public in names}
    return found


FACES = faces()


def resolve(package: str, name: str) -> Optional[str]:
    """The module `from package import name` loads: a submodule, the module a package's face takes it from, or
    the package itself."""
    if f"{package}.{name}" in MODULES:
        return f"{package}.{name}"
    if name in FACES.get(package, {}):
        return FACES[package][name]
    return package if package in MODULES else None


def imports(name: str) -> Iterator[tuple[str, int, bool]]:
    """(what is imported, line, whether through a package's face) for every import of module `name`, at its top
    and inside its functions; a face's name used as an attribute (`tracking.send_kept`) counts as its import."""
    tree = TREES[name]
    package = name if is_package(name) else name.rpartition(".")[0]
    aliases: dict[str, str] = {}  # a local name bound to one of our packages
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, False
                if alias.asname and alias.name in FACES:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            for alias in node.names:
                target = resolve(base, alias.name) if base in MODULES else None
                if target is None:
                    yield f"{base}.{alias.name}", node.lineno, False
                    continue
                yield target, node.lineno, base in FACES and target != f"{base}.{alias.name}"
                if target in FACES:
                    aliases[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            package_name = aliases[node.value.id]
            if node.attr in FACES[package_name]:
                yield FACES[package_name][node.attr], node.lineno, True


def ours(target: str) -> Optional[str]:
    """The module of this project that an import names (the longest known prefix), else None."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


GRAPH = {name: {ours(t) for t, _, _ in imports(name)} - {None, name} for name in MODULES}


def doors() -> set[str]:
    """The commands: every top-level module of orchestrator/ but cli and the package, and every `__main__`."""
    top = {n for n in MODULES if n.count(".") == 1 and n.startswith("orchestrator.") and n != CLI and not is_package(n)}
    return top | {n for n in MODULES if n.endswith(".__main__")}


def package_of(name: str) -> Optional[str]:
    """`search` for orchestrator.search.driver; None for a door, cli or trainables."""
    parts = name.split(".")
    if parts[0] != "orchestrator" or len(parts) < 2 or (len(parts) == 2 and not is_package(name)):
        return None
    return parts[1]


def test_no_import_circle_in_orchestrator_or_trainables():
    """Imports inside functions count: a circle hidden in a function is a circle."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_every_top_level_module_of_orchestrator_is_a_door():
    """Each command is a thin door: it ends with `if __name__ == "__main__"`; the libraries live in packages."""
    for name in doors():
        mains = [
            node
            for node in TREES[name].body
            if isinstance(node, ast.If)
            and "__name__" in ast.unparse(node.test)
            and "__main__" in ast.unparse(node.test)
        ]
        assert mains, f"{MODULES[name]} is not a command (no `if __name__ == '__main__'`): move it into a package"


def test_no_library_imports_a_door_or_what_the_doors_share():
    for name in MODULES:
        if name in doors() or name == CLI:
            continue
        bad = sorted(target for target in GRAPH[name] if target in doors() or target == CLI)
        assert not bad, f"{name} imports {bad}: a library never imports a command (nor cli.py, theirs)"


def test_packages_import_only_the_packages_below_them():
    rank = {package: i for i, tier in enumerate(LAYERS) for package in tier}
    assert set(rank) == {n.split(".")[1] for n in MODULES if n.count(".") == 1 and is_package(n)}
    for name in MODULES:
        own = package_of(name)
        if own is None:
            continue
        for target in GRAPH[name]:
            other = package_of(target)
            if other is not None and other != own:
                assert rank[other] > rank[own], f"{name} imports {target}: {own} may import only packages below it"


def test_other_packages_use_a_package_through_its_face():
    """Outside a package, its modules are reached through the names its `__init__` offers (`__all__`); inside it,
    a module imports its siblings by their module path (the face would import itself)."""
    for name in MODULES:
        if not name.startswith("orchestrator."):
            continue
        own = package_of(name)
        for node in ast.walk(TREES[name]):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if parts[0] != "orchestrator" or len(parts) < 2 or f"orchestrator.{parts[1]}" not in FACES:
                continue
            if parts[1] == own:
                assert len(parts) > 2, f"{name}:{node.lineno} imports its own package's face: import the module"
            else:
                assert len(parts) == 2, f"{name}:{node.lineno} reaches into {node.module}: import from its package"


def test_each_package_is_mapped_and_offers_only_what_its_modules_hold():
    for package, names in FACES.items():
        doc = ast.get_docstring(TREES[package]) or ""
        modules = [n for n in MODULES if n.rpartition(".")[0] == package and not n.endswith("__main__")]
        unmapped = [m for m in modules if f"`{m.rpartition('.')[2]}`" not in doc]
        assert not unmapped, f"{package}'s docstring does not map {unmapped}"
        for public, module in names.items():
            assert module in MODULES, f"{package} offers {public} from a module it does not have: {module}"
            assert f"{package}.{public}" not in MODULES, f"{package} offers {public}, also a module's name"
            defined = set()
            for node in TREES[module].body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    defined.add(node.name)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    defined |= {t.id for t in targets if isinstance(t, ast.Name)}
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    defined |= {a.asname or a.name.split(".")[0] for a in node.names}
            assert public in defined, f"{package} offers {public}, which {module} does not hold"


def test_trainables_import_nothing_of_the_driver_tune_or_mlflow():
    for name in MODULES:
        if not name.startswith("trainables"):
            continue
        for target, line, _ in imports(name):
            assert not target.startswith(("orchestrator", "ray.tune", "mlflow")), f"{name}:{line} imports {target}"


def top_level_statements(tree: ast.Module) -> Iterator[ast.AST]:
    """What runs when the module is imported: everything but the bodies of functions (and of classes' methods)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def test_importing_a_module_sets_no_environment_variable_and_no_plotting_backend():
    for name, tree in TREES.items():
        for node in top_level_statements(tree):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                assert called not in SIDE_EFFECTS, f"{name}:{node.lineno} calls {called} when imported"
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    assert not ast.unparse(target).startswith("os.environ["), f"{name}:{node.lineno} sets os.environ"


def run_python(code: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


REPORT = f"""
import json, os, sys
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules],
                  "environ": sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))}}))
"""


@pytest.mark.parametrize("door", sorted(d.split(".", 1)[1] for d in doors()))
def test_a_command_answers_help_without_ray_mlflow_or_torch_and_changes_no_environment(door, tmp_path):
    code = (
        f"""
import os
before = dict(os.environ)
import {"orchestrator." + door} as door
try:
    door.main(["--help"])
except SystemExit:
    pass
"""
        + REPORT
    )
    found = run_python(code, tmp_path)
    assert found == {"heavy": [], "environ": []}


def test_a_dry_run_loads_no_ray_mlflow_or_torch(tmp_path):
    """The plan, the pre-flight and the gating view of a teacher that is not cached need none of them."""
    spec = REPO / "search_spaces" / "peer.yaml"
    code = (
        f"""
import os
before = dict(os.environ)
import orchestrator.sweep as door
assert door.main([{str(spec)!r}, "--dry-run", "--set", "storage={tmp_path / "runs"}"]) == 0
"""
        + REPORT
    )
    found = run_python(code, tmp_path)
    assert found == {"heavy": [], "environ": []}
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # a dry run creates nothing
