"""`llmkit --help` against a bare Typer app with the same command names, timed in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer


def _command_tree(group: Any) -> dict[str, Any]:
    """{name: subtree or None} for llmkit's Typer command tree."""
    tree: dict[str, Any] = {}
    for name, command in getattr(group, "commands", {}).items():
        tree[name] = _command_tree(command) if isinstance(command, typer.core.TyperGroup) else None
    return tree


def bare_app_source(tree: dict[str, Any]) -> str:
    """Python source of a Typer app with the same command names and nothing behind them."""
    lines = ["import typer", "app = typer.Typer()"]
    for name, sub in tree.items():
        ident = name.replace("-", "_")
        if sub is None:
            lines += [f"@app.command({name!r})", f"def {ident}() -> None:", f"    '''{name}.'''"]
            continue
        lines.append(f"{ident}_app = typer.Typer()")
        for child in sub:
            child_ident = f"{ident}_{child.replace('-', '_')}"
            lines += [
                f"@{ident}_app.command({child!r})",
                f"def {child_ident}() -> None:",
                f"    '''{child}.'''",
            ]
        lines.append(f"app.add_typer({ident}_app, name={name!r})")
    lines += ["if __name__ == '__main__':", "    app()"]
    return "\n".join(lines) + "\n"


def _time_once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure_help(runs: int = 15) -> dict[str, float]:
    """Median wall time of `llmkit --help` and of the bare app's `--help`, interleaved run by run."""
    from llmkit.cli.main import app

    tree = _command_tree(typer.main.get_command(app))
    llmkit_bin = str(Path(sys.executable).parent / "llmkit")
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(bare_app_source(tree))
        commands = {"llmkit": [llmkit_bin, "--help"], "bare": [sys.executable, str(bare), "--help"]}
        for argv in commands.values():  # warm the page cache and .pyc files
            _time_once(argv)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(_time_once(argv))
    llmkit_ms = statistics.median(samples["llmkit"]) * 1000
    bare_ms = statistics.median(samples["bare"]) * 1000
    return {"llmkit_ms": llmkit_ms, "bare_ms": bare_ms, "ratio": llmkit_ms / bare_ms}
