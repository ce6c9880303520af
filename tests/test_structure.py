"""The shape of the package: subpackages by role, imports that point one way (no cycle between
modules or between subpackages, and each subpackage imports only the layers below it), the
installed package list matching the folders, and no generic top-level import names taken."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import bayesncl_pyro

from .conftest import ROOT, TINY

PACKAGE = "bayesncl_pyro"
# What each subpackage may import (besides itself); "" is a module at the top of the package.
ALLOWED = {
    "config": set(),
    "networks": {"config"},
    "distributions": {"config"},
    "storage": {"config"},
    "data": {"config", "storage"},
    "inference": {"config", "networks", "distributions", "storage", "data"},
    "guides": {"config", "distributions", "inference"},
    "models": {"config", "distributions", "inference", "guides"},
    "evaluation": {"config", "data", "inference", "storage", "networks", "distributions"},
    "training": {"config", "data", "networks", "inference", "storage", "evaluation", "distributions"},
    "experiments": {"config", "data", "inference", "storage", "evaluation", "training"},
    "browser": {"config", "data", "inference", "storage", "evaluation"},
    "cli": {"config", "data", "networks", "distributions", "inference", "storage", "evaluation", "training",
            "experiments", "guides", "models", "browser"},
    "": {"cli"},
}


def package_files() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the installed package (the
    mapped ``models`` and ``guides`` folders included)."""
    files = {}
    for search in bayesncl_pyro.__path__:
        for path in Path(search).rglob("*.py"):
            parts = path.relative_to(search).with_suffix("").parts
            files[".".join((PACKAGE, *parts)).removesuffix(".__init__")] = path
    for sub in ("models", "guides"):
        module = __import__(f"{PACKAGE}.{sub}", fromlist=["_"])
        for path in Path(module.__file__).parent.glob("*.py"):
            files[f"{PACKAGE}.{sub}.{path.stem}".removesuffix(".__init__")] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its source (function-level imports
    count: a cycle hidden in a function is still a cycle). ``from X import y`` is an edge to
    ``X.y`` when that is a module, else to ``X``."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = package_files()
    modules = set(files)
    return {name: imports_of(name, path, modules) for name, path in files.items()}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module in _packages()) else ""


def _packages() -> set[str]:
    return {name for name, path in package_files().items() if path.name == "__init__.py"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 40 and f"{PACKAGE}.models.bernoulli" in graph
    assert find_cycle(graph) is None


def test_subpackages_import_only_the_layers_below_them():
    graph = import_graph()
    package_graph: dict[str, set[str]] = {}
    wrong = []
    for module, targets in graph.items():
        source = subpackage(module)
        for target in targets:
            into = subpackage(target)
            if into == source:
                continue
            package_graph.setdefault(source, set()).add(into)
            if into not in ALLOWED[source]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []
    assert find_cycle(package_graph) is None
    assert set(ALLOWED) - {""} == {subpackage(p) for p in _packages() if p != PACKAGE}


def test_every_subpackage_says_what_lives_there():
    for name in _packages():
        module = __import__(name, fromlist=["_"])
        doc = module.__doc__ or ""
        assert len(doc.split()) >= 15, f"{name} has no docstring worth the name"


def test_no_module_is_named_like_the_standard_library():
    clashes = [name for name in package_files() if name.rpartition(".")[2] in sys.stdlib_module_names]
    assert clashes == []


def test_the_installed_package_list_is_the_folders():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _packages()


def test_installing_takes_no_generic_top_level_name(tmp_path):
    probe = "import importlib.util as u; print([n for n in ('models', 'guides') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_training_works_beside_a_users_own_models_and_guides(tmp_path):
    for name in ("models", "guides"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} was imported')\n")
    command = [sys.executable, "-m", "bayesncl_pyro.train"]
    help_text = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_text.returncode == 0 and "usage: bayesncl-train" in help_text.stdout
    run = subprocess.run([*command, "--config", str(ROOT / "configs" / "scenes_quick.yaml"), "--no-progress", *TINY,
                          "train.steps=2", "gate.prior=beta_bernoulli", f"train.out_dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()
