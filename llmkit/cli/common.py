"""Options and helpers every subcommand shares: --profile, server flags, settings loading, exits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from llmkit.errors import ConfigError

if TYPE_CHECKING:
    from llmkit.settings import Settings

# Exit codes: 0 ok; 1 the work failed (a server down, Redis unreachable); 2 bad usage or configuration.
EXIT_FAILURE = 1
EXIT_USAGE = 2

ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        envvar="LLMKIT_PROFILE",
        help="Profile NAME (default, local, ha) or PATH to a YAML file.",
        show_default="default",
    ),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Address to bind.", show_default="server.host")]
PortOpt = Annotated[
    int | None, typer.Option("--port", min=0, max=65535, help="Port to bind; 0 picks a free port.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Pre-forked worker processes sharing the port (SO_REUSEPORT)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print `llmkit: message` on stderr and exit with `code`."""
    typer.echo(f"llmkit: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(
    profile: str | None,
    flags: Mapping[str, Any] | None = None,
    layers: Callable[[], Sequence[tuple[Mapping[str, Any], Path]]] | None = None,
) -> Settings:
    """Load settings; a configuration error (also one from reading `layers`) exits with code 2."""
    from llmkit.settings import load_settings

    try:
        return load_settings(profile, flags, layers=layers() if layers else ())
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
