"""SQLite files: where a `sqlite:///` URL points, and switching a file to WAL when processes share it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

from llmkit.errors import ConfigError

if TYPE_CHECKING:
    import aiosqlite

T = TypeVar("T")
# How long opening a file waits for another process that holds its lock (a replica migrating it).
LOCK_WAIT_S = 10.0


def sqlite_path(url: str, setting: str) -> Path:
    """`sqlite:///data/a.db` -> data/a.db (relative), `sqlite:////var/a.db` -> /var/a.db."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{setting} {url!r}: a SQLite URL has no host; use sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
    if not path:
        raise ConfigError(
            f"{setting} {url!r}: name the file, e.g. sqlite:///./data/{setting.split('.')[0]}.db"
        )
    return Path(path)


async def while_locked(step: Callable[[], Awaitable[T]], wait_s: float = LOCK_WAIT_S) -> T:
    """`step()`, tried again while SQLite says the file is locked by another process, up to `wait_s`.

    Opening a file that other processes open at the same moment (gateway workers, replicas on one disk)
    can meet "database is locked" at once, without the busy timeout: `PRAGMA journal_mode = WAL` needs
    the file to itself, and WAL refuses some lock upgrades outright to avoid deadlocks. The steps it
    retries (switching to WAL, one migration transaction) are safe to run again.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            return await step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def use_wal(db: aiosqlite.Connection) -> None:
    """Switch the file to WAL (readers never block the writer), waiting for other processes opening it."""

    async def switch() -> None:
        await db.execute("PRAGMA journal_mode = WAL")

    await while_locked(switch)


# The nice value of a connection's thread that does background work (analytics batches): on a busy
# core the event loop's thread runs first, and the writer takes what is left over.
BACKGROUND_NICE = 10


def run_in_background(db: aiosqlite.Connection) -> bool:
    """Lower the scheduling priority of the connection's thread (Linux: per thread), so its writes never
    take CPU from the requests the event loop serves. False where that cannot be done."""
    thread = getattr(db, "_thread", None)  # aiosqlite's worker thread (not a public attribute)
    native = getattr(thread, "native_id", None)
    if native is None or not hasattr(os, "setpriority"):
        return False
    try:
        # Never higher than it is (a server started with `nice` stays below it).
        os.setpriority(os.PRIO_PROCESS, native, max(BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, native)))
    except OSError:
        return False
    return True
