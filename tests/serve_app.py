"""A tiny server subcommand for the serve tests: the flags and `run_server` path every llmkit server uses."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import typer
from aiohttp import web

from llmkit.cli.common import HostOpt, PortOpt, ProfileOpt, WorkersOpt, settings_or_exit
from llmkit.cli.serving import run_server
from llmkit.core.http import add_route, create_base_app, json_response
from llmkit.errors import ConfigError
from llmkit.settings import Settings

COMMAND = "serve-test"
DRAINING = web.AppKey("draining", asyncio.Event)
log = logging.getLogger("tests.serve_app")


def create_app(settings: Settings) -> web.Application:
    """The base app plus /slow, which answers only once the server has begun to drain; fails on demand."""
    if os.environ.get("SERVE_APP_FAIL"):
        raise ConfigError("SERVE_APP_FAIL is set; unset it to start the test app")
    counts = {"slow_started": 0, "slow_done": 0}

    async def stats() -> dict[str, object]:
        return {"demo": dict(counts), "pid": os.getpid()}

    app = create_base_app(COMMAND, settings.server, stats)
    app[DRAINING] = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        """Answer after the drain begins: proves SIGTERM waits for in-flight requests."""
        counts["slow_started"] += 1
        await asyncio.wait_for(request.app[DRAINING].wait(), timeout=60)
        await asyncio.sleep(0.2)
        counts["slow_done"] += 1
        return json_response({"done": True, "pid": os.getpid()})

    async def on_shutdown(app: web.Application) -> None:
        app[DRAINING].set()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        log.info("cleanup ran in pid %d", os.getpid())

    add_route(app, "GET", "/slow", slow)
    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(lifecycle)
    return app


cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Serve the test app the way `llmkit simulate` and friends do."""
    settings = settings_or_exit(profile, {"server.host": host, "server.workers": workers})
    run_server(COMMAND, create_app, settings, 0 if port is None else port)


if __name__ == "__main__":
    cli()
