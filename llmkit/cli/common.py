"""Options and helpers every subcommand shares: --profile, server flags, settings loading, exits."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer

from llmkit.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

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

# A seed's environment variables: NAME -> (the `section.key` it sets, a parser that raises ValueError), or
# several such pairs when one variable sets several settings (each still yields to its own flag or LLMKIT_*).
SeedParser = Callable[[str], Any]
SeedTarget = tuple[str, SeedParser]
SeedEnv = Mapping[str, SeedTarget | tuple[SeedTarget, ...]]


def console(stderr: bool = False) -> Console:
    """A rich console; off a terminal (a pipe, a file) it is wide enough that no value is cut off."""
    from rich.console import Console

    made = Console(stderr=stderr)
    # Rich wraps and truncates to 80 columns when it cannot ask a terminal; a script wants values whole.
    return made if made.is_terminal else Console(stderr=stderr, width=100_000)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print `llmkit: message` on stderr and exit with `code`."""
    from llmkit.core.secrets import mask_secrets

    # Messages quote URLs and driver errors: whatever built them, no credential reaches the terminal.
    typer.echo(f"llmkit: {mask_secrets(message)}", err=True)
    raise typer.Exit(code)


def serving_group(serve: Callable[..., None]) -> typer.Typer:
    """A command group that runs `serve` (with its options) when no subcommand follows, else the subcommand.

    `llmkit gateway --port 0` serves as the plain command did; `llmkit gateway keys list` only lists.
    """

    def callback(ctx: typer.Context, **options: Any) -> None:
        # A group's callback runs before its subcommand too; a subcommand must not start the server.
        if ctx.invoked_subcommand is None:
            serve(**options)

    # Typer reads the options off the signature: serve's own, after the context it passes first.
    served = inspect.signature(serve, eval_str=True)
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    callback.__signature__ = served.replace(parameters=[context, *served.parameters.values()])  # type: ignore[attr-defined]
    callback.__annotations__ = {"ctx": typer.Context, **get_type_hints(serve, include_extras=True)}
    group = typer.Typer()
    group.callback(invoke_without_command=True, help=inspect.getdoc(serve))(callback)
    return group


def settings_or_exit(
    profile: str | None,
    flags: Mapping[str, Any] | None = None,
    layers: Callable[[], Sequence[tuple[Mapping[str, Any], Path]]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings; a configuration error (also one from reading `layers`) exits with code 2."""
    from llmkit.settings import load_settings

    try:
        return load_settings(profile, flags, env=env, layers=layers() if layers else ())
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)


def parse_port(text: str) -> int:
    """`"8080"` -> 8080; ValueError unless it is a port number."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise ValueError("must be a port (0-65535)")
    return int(text)


def parse_number(text: str) -> float:
    """`"512"` -> 512.0; ValueError unless it is a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def parse_count(text: str) -> int:
    """`"20"` -> 20; ValueError unless it is a whole number >= 1 (a count, a size, a number of days)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError("must be a whole number >= 1")
    return int(text)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(text: str) -> bool:
    """true/false, 1/0, yes/no (any case) -> a bool; ValueError otherwise."""
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ValueError("must be true/false, 1/0 or yes/no")
    return value


def parse_text(text: str) -> str:
    """The text itself; ValueError when it is empty (an empty variable is a mistake, not a value)."""
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def llmkit_env_name(dotted: str) -> str:
    """`gateway.port` -> `LLMKIT_GATEWAY_PORT`."""
    return "LLMKIT_" + dotted.replace(".", "_").upper()


def seed_env_flags(
    table: SeedEnv, env: Mapping[str, str], flags: Mapping[str, Any]
) -> dict[str, tuple[Any, str]]:
    """A seed's variables as flags for the settings no flag and no LLMKIT_* variable sets; bad values exit 2.

    `flags` maps `section.key` to a value or a `(value, origin)` pair, None meaning "not given". Where two
    variables set one setting, the first in `table` wins.
    """
    given = {dotted: value[0] if isinstance(value, tuple) else value for dotted, value in flags.items()}
    found: dict[str, tuple[Any, str]] = {}
    for name, spec in table.items():
        text = env.get(name)
        if text is None:
            continue
        targets: tuple[SeedTarget, ...] = (spec,) if isinstance(spec[0], str) else spec
        for dotted, parse in targets:
            if given.get(dotted) is not None or llmkit_env_name(dotted) in env or dotted in found:
                continue
            try:
                found[dotted] = (parse(text), f"env {name}")
            except ValueError as exc:
                fail(f"configuration error: environment variable {name} {exc}; got {text!r}", EXIT_USAGE)
    return found


def parse_rate(text: str) -> float:
    """`"0.1"` -> 0.1; ValueError unless it is a number from 0 to 1 (a probability)."""
    value = parse_number(text)
    if not 0 <= value <= 1:
        raise ValueError("must be a number from 0 to 1")
    return value


def parse_http_url(text: str) -> str:
    """An http:// or https:// URL as given; ValueError otherwise."""
    url = parse_text(text)
    if url.partition("://")[0].lower() not in ("http", "https") or "://" not in url:
        raise ValueError("must be an http:// or https:// URL (the collector's OTLP/HTTP endpoint)")
    return url


# Seed 002's tracing variables, honoured by every server command (LLMKIT_TELEMETRY_* and flags win).
# OTLP_ENDPOINT may end in /v1/traces or not: core.telemetry adds the path when it is missing.
TELEMETRY_ENV: SeedEnv = {
    "TELEMETRY_ENABLED": ("telemetry.enabled", parse_bool),
    "OTLP_ENDPOINT": ("telemetry.otlp_endpoint", parse_http_url),
    "SAMPLING_RATE": ("telemetry.sampling_rate", parse_rate),
    "SERVICE_NAME": ("telemetry.service_name", parse_text),
    "ENVIRONMENT": ("telemetry.environment", parse_text),
}
