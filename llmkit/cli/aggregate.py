"""`llmkit aggregate`: the idempotent event aggregator (ChronicleWeaver's API), durable when it answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import (
    EXIT_USAGE,
    TELEMETRY_ENV,
    HostOpt,
    PortOpt,
    ProfileOpt,
    SeedEnv,
    WorkersOpt,
    fail,
    parse_port,
    parse_text,
    seed_env_flags,
    settings_or_exit,
)

if TYPE_CHECKING:
    from llmkit.settings import Settings


def sqlite_url(path: str) -> str:
    """A SQLite file path -> its store URL (`data/a.db` -> sqlite:///data/a.db)."""
    return f"sqlite:///{path}"


# The seed's variables, honoured where a ChronicleWeaver deployment sets them; flags and LLMKIT_* win.
SEED_ENV: SeedEnv = {
    "APP_PORT": ("aggregate.port", parse_port),
    "DEDUPLICATION_DB_PATH": ("aggregate.store", lambda text: sqlite_url(parse_text(text))),
    **TELEMETRY_ENV,
}


def banner(settings: Settings) -> Any:
    """Where events go and a request to paste."""
    from llmkit.settings import mask_url

    agg = settings.aggregate

    def lines(url: str) -> list[str]:
        event = (
            '{"event_id": "e-1", "topic": "demo", "source": "curl", '
            '"payload": {"message": "hello", "timestamp": "2025-10-28T10:00:00Z"}, '
            '"timestamp": "2025-10-28T10:00:00Z"}'
        )
        return [
            f"  store:  {mask_url(agg.store)} (ack: {agg.ack}, sync: {agg.sync})",
            f"  docs:   {url}/docs",
            f"  try:    curl {url}/publish -H 'Content-Type: application/json' -d '{event}'",
        ]

    return lines


def aggregate(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    profile: ProfileOpt = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="sqlite:///path.db or clickhouse://host:9000/db.", show_default="profile"
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="SQLite file to use (the seed's DEDUPLICATION_DB_PATH).")
    ] = None,
    ack: Annotated[
        str | None,
        typer.Option("--ack", help="durable: 200 once committed; queued: 202 at once (the seed's way)."),
    ] = None,
    channel_capacity: Annotated[
        int | None,
        typer.Option("--channel-capacity", min=1, help="Events that may wait for the writer before 429."),
    ] = None,
) -> None:
    """Serve the event aggregator: POST /publish, GET /events, /stats, /health, /docs.

    Duplicates of (topic, event_id) are dropped, across restarts too.
    With --ack durable (the default) a 200 means the events are committed.
    APP_PORT and DEDUPLICATION_DB_PATH work as in ChronicleWeaver.

    Examples:

      llmkit aggregate --port 8000

      llmkit aggregate --db ./data/chronicle.db --ack queued

      llmkit aggregate --store clickhouse://127.0.0.1:9000/events --workers 2
    """
    if store is not None and db is not None:
        fail("pass either --store URL or --db PATH, not both", EXIT_USAGE)
    if db is not None:
        store = sqlite_url(str(db))
    flags: dict[str, Any] = {
        "server.host": (host, "flag --host"),
        "server.workers": (workers, "flag --workers"),
        "aggregate.port": (port, "flag --port"),
        "aggregate.store": (
            store if db is None else sqlite_url(str(db)),
            "flag --db" if db else "flag --store",
        ),
        "aggregate.ack": (ack, "flag --ack"),
        "aggregate.channel_capacity": (channel_capacity, "flag --channel-capacity"),
    }
    flags.update(seed_env_flags(SEED_ENV, os.environ, flags))
    settings = settings_or_exit(profile, flags)
    from llmkit.aggregate.app import create_app
    from llmkit.cli.serving import run_server

    run_server("aggregate", create_app, settings, settings.aggregate.port, banner=banner(settings))
