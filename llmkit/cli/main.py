"""The root `llmkit` Typer app: joins the subcommand modules; imports nothing heavy."""

from __future__ import annotations

from typing import Annotated

import typer

from llmkit import __version__
from llmkit.cli import aggregate, cache, config, gateway, orchestrate, platform, publish, simulate, stats
from llmkit.cli.common import serving_group


def _flags_read_as_switches() -> None:
    """Help pages show a flag as a switch (`--wait / --no-wait`), with no `<bool>` value after it."""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "_llmkit", False):
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
        # Typer writes the type of every option, `<bool>` for flags too, which reads as if a flag took
        # a value (`--wait <bool>`); a switch takes none.
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._llmkit = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flags_read_as_switches()

app = typer.Typer(
    name="llmkit",
    help=(
        "The servers an LLM application needs around its model, fast enough to load-test with.\n\n"
        "Examples:\n\n"
        "  llmkit simulate --port 4545\n\n"
        "  llmkit gateway --config config.toml\n\n"
        "  llmkit aggregate --port 8000\n\n"
        '  llmkit orchestrate submit "Hello" --wait\n\n'
        "  llmkit publish --url http://127.0.0.1:8000 --count 100000 --duplicates 0.2 --verify\n\n"
        "  llmkit config show --profile local\n\n"
        "  llmkit cache stats --url redis://127.0.0.1:6379/0\n\n"
        "  llmkit stats http://127.0.0.1:4545 --once --json"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """llmkit: simulate, gateway, orchestrate, aggregate, publish, cache and stats in one CLI."""


app.add_typer(simulate.app, name="simulate")
gateway_group = serving_group(gateway.gateway)
gateway_group.add_typer(platform.keys, name="keys")
gateway_group.add_typer(platform.tenants, name="tenants")
app.add_typer(gateway_group, name="gateway")
app.add_typer(orchestrate.app, name="orchestrate")
app.command("aggregate")(aggregate.aggregate)
app.command("publish")(publish.publish)
app.add_typer(config.app, name="config")
app.add_typer(cache.app, name="cache")
app.command("stats")(stats.stats)


def run() -> None:
    """Console-script entry point."""
    app()
