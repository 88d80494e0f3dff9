"""`llmkit config`: show the merged settings and where each value came from."""

from __future__ import annotations

import typer

from llmkit.cli.common import JsonOpt, ProfileOpt, settings_or_exit

app = typer.Typer(
    help="Inspect llmkit settings.\n\nExample: llmkit config show --profile local",
    no_args_is_help=True,
)


@app.command("show")
def show(profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Print the merged settings (secrets masked) and where each value came from.

    Precedence: defaults < profile < LLMKIT_<SECTION>_<KEY> environment < flags.

    Example: LLMKIT_CACHE_TTL=60 llmkit config show --profile local --json
    """
    settings = settings_or_exit(profile)
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
