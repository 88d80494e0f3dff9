"""Reaching ClickHouse: connection settings parsed from a URL, and driver errors as BackendError."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from llmkit.core.backends import parse_backend_url
from llmkit.errors import BackendError, ConfigError
from llmkit.settings import mask_url

if TYPE_CHECKING:
    from clickhouse_driver import Client

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = "response_simulator"
NATIVE_PORT = 9000
URL_PARAMS = ("connect_timeout", "send_receive_timeout", "database")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ClickHouse server error codes that deserve their own hint.
_UNKNOWN_TABLE, _UNKNOWN_DATABASE = 60, 81
_AUTH_CODES = (192, 193, 194, 516)
_TIMEOUTS = {"connect_timeout": 3.0, "send_receive_timeout": 30.0}


@dataclass(frozen=True)
class ClickHouseConfig:
    """Where and as whom to reach ClickHouse over its native protocol."""

    host: str
    port: int
    database: str
    username: str = "default"
    password: str = field(default="", repr=False)
    connect_timeout: float = 3.0
    send_receive_timeout: float = 30.0

    @property
    def url(self) -> str:
        """The address for messages and logs, without credentials."""
        return f"clickhouse://{self.host}:{self.port}/{self.database}"

    def client(self, database: str | None = None) -> Client:
        """A new (not yet connected) clickhouse-driver client; it is blocking and not thread-safe."""
        from clickhouse_driver import Client

        return Client(
            self.host,
            port=self.port,
            database=database or self.database,
            user=self.username,
            password=self.password,
            connect_timeout=self.connect_timeout,
            send_receive_timeout=self.send_receive_timeout,
            client_name="llmkit",
        )


def clickhouse_config(url: str, username: str = "default", password: str = "") -> ClickHouseConfig:
    """Parse `clickhouse://host:9000/db` (or the seed's `http://host:8123`) into a ClickHouseConfig."""
    parsed = parse_backend_url(url, "clickhouse", ("clickhouse", "http"))
    parsed.check_params(URL_PARAMS)
    path = urlsplit(url).path.strip("/")
    database = path or parsed.params.get("database") or "default"
    if not _IDENTIFIER.fullmatch(database):
        raise ConfigError(
            f"clickhouse URL {mask_url(url)!r}: database name {database!r} must be letters, digits and _ "
            "(it is used in CREATE DATABASE)"
        )
    port = parsed.port or NATIVE_PORT
    if parsed.scheme == "http":
        # llmkit speaks the native protocol (clickhouse-driver); the seed's config names the HTTP port.
        port = NATIVE_PORT
        log.info(
            "clickhouse URL http://%s:%s is the HTTP interface; using the native protocol at "
            "clickhouse://%s:%d/%s",
            parsed.host,
            parsed.port or 8123,
            parsed.host,
            port,
            database,
        )
    timeouts = {name: parsed.get(name, float, default) for name, default in _TIMEOUTS.items()}
    for name, value in timeouts.items():
        if not value > 0:
            raise ConfigError(
                f"clickhouse URL {mask_url(url)!r}: parameter {name} must be > 0 seconds; got {value}"
            )
    return ClickHouseConfig(
        host=parsed.host,
        port=port,
        database=database,
        username=parsed.username or username,
        password=parsed.password or password,
        **timeouts,
    )


def backend_error(exc: BaseException, config: ClickHouseConfig) -> BackendError:
    """A driver or socket error as a BackendError that names the URL and says what to change."""
    from clickhouse_driver import errors

    if isinstance(exc, (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError)):
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return BackendError(f"cannot reach ClickHouse at {config.url}: {reason}")
    code = getattr(exc, "code", None)
    first = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
    detail = first[0] if first else type(exc).__name__
    if code == _UNKNOWN_TABLE:
        return BackendError(
            f"ClickHouse at {config.url} has no table {config.database}.{TABLE}: create it and load "
            "rows with `llmkit simulate init-db --load FILE.jsonl` (or --sample)"
        )
    if code == _UNKNOWN_DATABASE:
        return BackendError(
            f"ClickHouse at {config.url} has no database {config.database}: create it with "
            "`llmkit simulate init-db` or fix the database in the URL"
        )
    if code in _AUTH_CODES:
        return BackendError(f"ClickHouse at {config.url} refused user {config.username!r}: {detail}")
    return BackendError(f"ClickHouse at {config.url}: {detail}")


class ClickHousePool:
    """Blocking driver calls in a thread pool, each on an idle client of its own (a new one when none is
    idle); a client that failed is dropped, and driver errors become BackendError through `describe`."""

    def __init__(
        self,
        config: ClickHouseConfig,
        threads: int,
        what: str,
        describe: Callable[[BaseException], BackendError],
    ) -> None:
        self.config = config
        self.threads = threads
        self.what = what
        self._describe = describe
        self._executor: ThreadPoolExecutor | None = None
        # Idle clients; list.append / list.pop are atomic, and a client is used by one thread at a time.
        self._idle: list[Client] = []

    def start(self) -> None:
        """Start the threads (before the first run)."""
        self._executor = ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix=f"llmkit-{self.what}"
        )

    async def run(self, fn: Callable[[Client], T]) -> T:
        """`fn(client)` in a pool thread."""
        if self._executor is None:
            raise BackendError(f"{self.what} {self.config.url} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[Client], T]) -> T:
        from clickhouse_driver import errors

        try:
            client = self._idle.pop()
        except IndexError:
            # Every client talks to `default` and names tables in full: the URL's database may not exist yet.
            client = self.config.client(database="default")
        try:
            result = fn(client)
        except BaseException as exc:
            # A failed client may be half-way through a packet; the next call starts afresh.
            client.disconnect()
            if isinstance(exc, (errors.Error, OSError, EOFError)):
                raise self._describe(exc) from exc
            raise
        self._idle.append(client)
        return result

    async def close(self) -> None:
        """Let running calls finish, stop the threads and disconnect the idle clients."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True)
        while self._idle:
            self._idle.pop().disconnect()
