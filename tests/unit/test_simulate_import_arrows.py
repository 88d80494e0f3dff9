"""STYLE rule 13 for simulate: app.py imports the route modules; no other module imports app.py back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmkit.simulate

APP = "llmkit.simulate.app"
PACKAGE_DIR = Path(llmkit.simulate.__file__).parent


def module_name(path: Path) -> str:
    """The dotted name of a module file under llmkit/simulate."""
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["llmkit", "simulate", *parts])


def imported_modules(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Every module (and `from X import Y` candidate X.Y) that the code imports, at any depth."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: drop one package level per dot beyond the first.
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            # `from llmkit.simulate import app` imports the submodule.
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def imports_app(source: str, name: str, is_package: bool = False) -> bool:
    """True when the code imports llmkit.simulate.app in any spelling."""
    modules = imported_modules(ast.parse(source), name, is_package)
    return any(m == APP or m.startswith(APP + ".") for m in modules)


def simulate_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_no_module_but_app_imports_app() -> None:
    modules = simulate_modules()
    assert PACKAGE_DIR / "app.py" in modules
    assert PACKAGE_DIR / "sources" / "__init__.py" in modules  # the walk goes into subpackages
    offenders = [
        str(path.relative_to(PACKAGE_DIR))
        for path in modules
        if path != PACKAGE_DIR / "app.py"
        and imports_app(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    ]
    assert offenders == [], f"import shared pieces from state.py, slot.py or reply.py: {offenders}"


def test_app_imports_the_route_modules() -> None:
    tree = ast.parse((PACKAGE_DIR / "app.py").read_text(encoding="utf-8"))
    modules = imported_modules(tree, APP, is_package=False)
    routes = ("anthropic", "completions", "embeddings", "ollama", "responses")
    assert {f"llmkit.simulate.{r}" for r in routes} <= modules


@pytest.mark.parametrize(
    ("source", "name", "is_package"),
    [
        ("import llmkit.simulate.app", "llmkit.simulate.shapes", False),
        ("import llmkit.simulate.app as a", "llmkit.simulate.shapes", False),
        ("from llmkit.simulate.app import STATE_KEY", "llmkit.simulate.shapes", False),
        ("from llmkit.simulate import app", "llmkit.simulate.shapes", False),
        ("from llmkit.simulate import faults, app as a", "llmkit.simulate.shapes", False),
        ("def f():\n    from llmkit.simulate.app import create_app\n", "llmkit.simulate.shapes", False),
        ("from .app import request_slot", "llmkit.simulate.shapes", False),
        ("from . import app", "llmkit.simulate.shapes", False),
        ("from ..app import STATE_KEY", "llmkit.simulate.sources.file", False),
        ("from .. import app", "llmkit.simulate.sources", True),
    ],
)
def test_every_spelling_is_caught(source: str, name: str, is_package: bool) -> None:
    assert imports_app(source, name, is_package)


@pytest.mark.parametrize(
    "source",
    [
        "from llmkit.simulate.state import STATE_KEY",
        "from llmkit.simulate import slot",
        "from llmkit.gateway.app import create_app",
        "from . import apps",
        "import llmkit.simulate.application",
    ],
)
def test_other_imports_pass(source: str) -> None:
    assert not imports_app(source, "llmkit.simulate.shapes")
