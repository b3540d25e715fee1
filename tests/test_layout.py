"""The architecture rules, checked on the source: who may import whom.

Every ``.py`` under serving/, training/, tokenizers/ and rnnmt/ is parsed (never imported) and every
import in it counted: at module level, inside functions (lazy imports), under ``if TYPE_CHECKING``, and
``importlib.import_module`` / ``__import__`` with a literal name. A rule is broken by a module in its
scope that imports a forbidden module, directly or through modules outside the scope (rnnmt.errors,
rnnmt.tokenizers, a package's ``__init__``, …); a chain through another module of the scope is that
module's own break, reported there. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "rnnmt": "rnnmt",
    "serving": "rnnmt.serving",
    "training": "rnnmt.training",
    "tokenizers": "rnnmt.tokenizers",
}
"""Source folder → the package it is installed as (pyproject's package-dir)."""


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (for ``from p import name``: p.name where that is a module)
    line: int


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool
    imports: tuple[Import, ...]


def module_name(root: Path, path: Path, packages: dict[str, str]) -> str:
    folder, *rest = path.relative_to(root).with_suffix("").parts
    parts = [packages[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> Iterator[Import]:
    """Every import in ``tree`` (module ``name``), resolved to absolute module names."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield Import(submodule if submodule in known else source, node.lineno)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.args[0].value, node.lineno)


def walk_tree(root: Path, packages: dict[str, str]) -> dict[str, Module]:
    """The modules of the source tree under ``root``, by installed name, with their imports."""
    paths = {
        module_name(root, path, packages): path
        for folder in packages
        for path in sorted((root / folder).rglob("*.py"))
    }
    modules = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = sorted(set(imports_in(tree, name, is_package, set(paths))), key=lambda i: (i.line, i.target))
        modules[name] = Module(name, path, is_package, tuple(found))
    return modules


def runs(target: str, modules: dict[str, Module]) -> list[str]:
    """The modules of the tree that importing ``target`` runs: its packages' ``__init__`` and itself."""
    parts = target.split(".")
    return [m for m in (".".join(parts[: i + 1]) for i in range(len(parts))) if m in modules]


def within(*prefixes: str) -> Callable[[str], bool]:
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class Rule:
    text: str
    scope: Callable[[str], bool]
    forbidden: Callable[[str], bool]


RULES = {
    "serving-without-training-or-torch": Rule(
        "serving never imports training or torch",
        within("rnnmt.serving"),
        within("rnnmt.training", "torch"),
    ),
    "batch-without-server": Rule(
        "serving/batch never imports rnnmt.serving.server",
        within("rnnmt.serving.batch"),
        within("rnnmt.serving.server"),
    ),
    "training-uses-only-the-core-of-serving": Rule(
        "training imports from serving only rnnmt.serving.core",
        within("rnnmt.training"),
        lambda name: (
            within("rnnmt.serving")(name)
            and name != "rnnmt.serving"
            and not within("rnnmt.serving.core")(name)
        ),
    ),
    "core-without-server-batch-or-client": Rule(
        "serving/core imports nothing from serving/server, serving/batch or serving/client",
        within("rnnmt.serving.core"),
        within("rnnmt.serving.server", "rnnmt.serving.batch", "rnnmt.serving.client"),
    ),
}


def breaks(rule: Rule, modules: dict[str, Module], root: Path) -> list[str]:
    """One line per import that breaks the rule: "file:line imports module", the first step of a chain
    from a module in scope to a forbidden module, through modules outside the scope."""
    found = []
    for module in modules.values():
        if not rule.scope(module.name):
            continue
        seen = {module.name}
        todo: list[tuple[Module, list[str]]] = [(module, [])]  # a module to follow, and how it was reached
        while todo:
            current, chain = todo.pop(0)
            for imp in current.imports:
                step = [*chain, f"{current.path.relative_to(root)}:{imp.line} imports {imp.target}"]
                if rule.forbidden(imp.target):
                    found.append(" → ".join(step))
                    continue
                for reached in runs(imp.target, modules):
                    if reached not in seen and not rule.scope(reached):
                        seen.add(reached)
                        todo.append((modules[reached], step))
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return walk_tree(REPO, PACKAGES)


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_architecture_rule(rule: str, modules: dict[str, Module]) -> None:
    found = breaks(RULES[rule], modules, REPO)
    assert not found, f"{RULES[rule].text}, but:\n" + "\n".join(found)


def test_the_walk_covers_the_source_tree(modules: dict[str, Module]) -> None:
    """Guards the rules against passing on nothing: every folder is walked and its imports are seen."""
    for folder, package in PACKAGES.items():
        files = sorted((REPO / folder).rglob("*.py"))
        assert files and {m.path for m in modules.values() if within(package)(m.name)} >= set(files), folder
    assert any(within("torch")(i.target) for m in modules.values() for i in m.imports)
    assert any(i.target.startswith("rnnmt.serving.core.") for i in modules["rnnmt.training.trainer"].imports)


def test_the_walk_counts_every_kind_of_import(tmp_path: Path) -> None:
    """On a made-up tree: module-level, lazy, relative, TYPE_CHECKING and importlib imports are all
    counted, ``from package import submodule`` names the submodule, and chains are followed through
    modules outside the scope, packages' ``__init__`` included."""
    files = {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/a.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import numpy as np\n"
            "from . import b\n"
            "from .b import thing\n"
            "from ..util import helper\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.server.app import App\n"
            "def lazy():\n"
            "    import torch.nn\n"
            "    import importlib\n"
            "    return importlib.import_module('pkg.server.app')\n"
        ),
        "pkg/core/b.py": "thing = 1\n",
        "pkg/util.py": "def helper():\n    from pkg.server import app\n",
        "pkg/server/__init__.py": "from pkg.server.app import App\n",
        "pkg/server/app.py": "class App: ...\n",
        "other/__init__.py": "",
        "other/mod.py": "import pkg.server\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = walk_tree(tmp_path, {"pkg": "pkg", "other": "other"})
    assert [(i.target, i.line) for i in modules["pkg.core.a"].imports] == [
        ("__future__", 1),
        ("typing", 2),
        ("numpy", 3),
        ("pkg.core.b", 4),
        ("pkg.core.b", 5),
        ("pkg.util", 6),
        ("pkg.server.app", 8),
        ("torch.nn", 10),
        ("importlib", 11),
        ("pkg.server.app", 12),
    ]
    rule = Rule("core never imports server or torch", within("pkg.core"), within("pkg.server", "torch"))
    assert breaks(rule, modules, tmp_path) == [
        "pkg/core/a.py:8 imports pkg.server.app",
        "pkg/core/a.py:10 imports torch.nn",
        "pkg/core/a.py:12 imports pkg.server.app",
        "pkg/core/a.py:6 imports pkg.util → pkg/util.py:2 imports pkg.server.app",
    ]
    rule = Rule("other never imports the app", within("other"), within("pkg.server.app"))
    assert breaks(rule, modules, tmp_path) == [
        "other/mod.py:1 imports pkg.server → pkg/server/__init__.py:1 imports pkg.server.app"
    ]


def test_every_package_of_the_source_tree_is_installed() -> None:
    """pyproject.toml lists the packages setuptools installs: a folder missing from it works in the
    editable install and is absent from a built one (the container images)."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([name, *parts]))
    assert found <= set(setuptools["packages"]), sorted(found - set(setuptools["packages"]))
