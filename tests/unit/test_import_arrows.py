"""STYLE rule 13, arrows point down: a system's app.py imports its route modules, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmkit

ROOT = Path(llmkit.__file__).parent
# One line per system whose circles are mended.
SYSTEMS = [
    "aggregate",
    "gateway",
    "orchestrate",
    "simulate",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _names(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[str]:
    """The modules an import may name, relative ones resolved against `package`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = package[: len(package) - node.level + 1] if node.level else []
    source = ".".join([*base, *([node.module] if node.module else [])])
    # `from llmkit.gateway import app` names the module too.
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def back_imports(source: str, module: str, app: str, is_package: bool = False) -> list[str]:
    """`line: statement` for each import in `source` (module `module`), at any depth, of `app` or from it."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(name == app or name.startswith(f"{app}.") for name in _names(node, package))
    ]


@pytest.mark.parametrize("system", SYSTEMS)
def test_nothing_under_a_system_imports_its_app(system: str) -> None:
    package = ROOT / system
    app = f"llmkit.{system}.app"
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        if path == package / "app.py":
            continue
        found = back_imports(
            path.read_text(encoding="utf-8"), _module_name(path), app, path.name == "__init__.py"
        )
        if found:
            offenders[str(path.relative_to(ROOT.parent))] = found
    assert not offenders, f"move what these need out of {app} into a module both import: {offenders}"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from llmkit.gateway.app import GATEWAY_KEY", "llmkit.gateway.openai_face"),
        ("def f():\n    from llmkit.gateway.app import chat_request", "llmkit.gateway.queued"),
        ("import llmkit.gateway.app", "llmkit.gateway.queued"),
        ("from llmkit.gateway import app", "llmkit.gateway.queued"),
        ("from .app import GATEWAY_KEY", "llmkit.gateway.queued"),
        ("from . import app", "llmkit.gateway.queued"),
        ("from ..app import GATEWAY_KEY", "llmkit.gateway.sub.module"),
        ("from llmkit.gateway import chat, app as a", "llmkit.gateway.queued"),
        ("import llmkit.gateway.app as a", "llmkit.gateway.queued"),
    ],
)
def test_every_spelling_of_a_back_import_is_caught(source: str, module: str) -> None:
    assert back_imports(source, module, "llmkit.gateway.app")


def test_a_subpackage_importing_its_systems_app_is_caught() -> None:
    assert back_imports(
        "from .. import app", "llmkit.simulate.sources", "llmkit.simulate.app", is_package=True
    )


@pytest.mark.parametrize(
    "source",
    [
        "from llmkit.gateway.answers import chat_request",
        "from llmkit.gateway import answers, state",
        "from llmkit.gateway.application import x",
        "from . import apps",
        "from llmkit.simulate.app import STATE_KEY",
    ],
)
def test_other_imports_pass(source: str) -> None:
    assert not back_imports(source, "llmkit.gateway.queued", "llmkit.gateway.app")
