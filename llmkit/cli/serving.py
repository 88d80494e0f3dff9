"""`run_server`: what every server subcommand calls to configure logging, serve, and announce its address."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import typer

from llmkit.cli.common import EXIT_USAGE, fail
from llmkit.errors import ConfigError, LlmkitError
from llmkit.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

# Builds the app in each worker process from the merged settings (a system's `create_app`).
AppFactory = Callable[[Settings], "web.Application | Awaitable[web.Application]"]


def configure_logging(level: str) -> None:
    """Plain log lines on stderr (stdout carries only the listening line), with the request id."""
    from llmkit.core.access_log import stderr_handler

    handler = stderr_handler()
    sys.excepthook = _masked_excepthook
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level != "debug":
        # The driver logs a traceback per failed connect; llmkit wraps the error into one clear line.
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)


def _masked_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    from llmkit.core.secrets import mask_secrets

    sys.stderr.write(mask_secrets("".join(traceback.format_exception(kind, exc, tb))))


def server_url(host: str, port: int) -> str:
    """`http://HOST:PORT`, with brackets around an IPv6 address."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_server(
    command: str,
    app_factory: AppFactory,
    settings: Settings,
    port: int,
    banner: Callable[[str], list[str]] | None = None,
) -> None:
    """Serve `app_factory(settings)` on server.host:port until SIGTERM/SIGINT; prints one listening line.

    `banner(url)` gives extra lines for people (what is served, a curl line); they go to stderr.
    """
    from llmkit.core.secrets import mask_secrets
    from llmkit.core.serve import serve

    configure_logging(settings.server.log_level)
    server = settings.server

    def announce(host: str, bound_port: int) -> None:
        # Exactly one line, flushed: CI scripts and tests wait for it before they send requests.
        url = server_url(host, bound_port)
        sys.stdout.write(f"llmkit {command} listening on {url}\n")
        sys.stdout.flush()
        for line in banner(url) if banner else ():
            sys.stderr.write(mask_secrets(line) + "\n")
        sys.stderr.flush()

    factory: Callable[[], web.Application | Awaitable[web.Application]] = functools.partial(
        app_factory, settings
    )
    if settings.telemetry.enabled:
        factory = functools.partial(_traced_app, app_factory, settings, command)
    try:
        code = serve(
            factory,
            server.host,
            port,
            workers=server.workers,
            drain_timeout=server.drain_timeout,
            stop_grace=server.stop_grace_s,
            on_ready=announce,
        )
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    except LlmkitError as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


async def _traced_app(app_factory: AppFactory, settings: Settings, command: str) -> web.Application:
    """The app, built after tracing starts in this process (each worker's own, after the fork)."""
    import inspect

    from llmkit import __version__
    from llmkit.core import telemetry

    telemetry.configure(
        settings.telemetry, settings.telemetry.service_name or f"llmkit-{command}", __version__
    )
    made = app_factory(settings)
    app = await made if inspect.isawaitable(made) else made
    app.on_cleanup.append(telemetry.close)
    return app
