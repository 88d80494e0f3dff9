"""`llmkit config`: show the merged settings and where each value came from."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli.common import EXIT_USAGE, JsonOpt, ProfileOpt, fail, settings_or_exit

if TYPE_CHECKING:
    from llmkit.settings import Settings

# Commands that read more than LLMKIT_* (a seed's variables, its config file): --for NAME shows their view.
COMMANDS = ("gateway", "simulate", "orchestrate", "aggregate")

app = typer.Typer(
    help="Inspect llmkit settings.\n\nExample: llmkit config show --profile local",
    no_args_is_help=True,
)


@app.command("show")
def show(
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
    command: Annotated[
        str | None,
        typer.Option(
            "--for",
            help="Show the settings COMMAND would run with, its seed variables (REDIS_URL, PORT...) and "
            "CONFIG_PATH included: gateway, simulate, orchestrate or aggregate.",
            metavar="COMMAND",
        ),
    ] = None,
) -> None:
    """Print the merged settings (secrets masked) and where each value came from.

    Precedence: defaults < profile < LLMKIT_<SECTION>_<KEY> environment < flags.

    Examples:

      LLMKIT_CACHE_TTL=60 llmkit config show --profile local --json

      REDIS_URL=redis://127.0.0.1:6379 llmkit config show --for gateway
    """
    settings = _settings_for(command, profile)
    rows = settings.masked()
    if as_json:
        import orjson

        body = {
            "profile": settings.profile,
            "settings": {key: {"value": value, "origin": origin} for key, value, origin in rows},
        }
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    from llmkit.cli.common import console

    table = Table(title=f"llmkit settings (profile {settings.profile})")
    table.add_column("key", style="cyan")
    table.add_column("value")
    table.add_column("from", style="dim")
    for key, value, origin in rows:
        table.add_row(key, repr(value) if isinstance(value, str) and value == "" else str(value), origin)
    console().print(table)


def _settings_for(command: str | None, profile: str | None) -> Settings:
    if command is None:
        return settings_or_exit(profile)
    if command == "gateway":
        from llmkit.cli.gateway import gateway_settings

        return gateway_settings(profile, None, {}, os.environ)
    if command in COMMANDS:
        from llmkit.cli.common import TELEMETRY_ENV, seed_env_flags

        table = TELEMETRY_ENV
        if command == "aggregate":
            from llmkit.cli.aggregate import SEED_ENV as table
        return settings_or_exit(profile, seed_env_flags(table, os.environ, {}))
    fail(f"--for {command!r}: one of {', '.join(COMMANDS)}", EXIT_USAGE)
