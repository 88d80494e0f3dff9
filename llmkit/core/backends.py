"""Backend URLs: one parser for `memory://`, `redis://`, `redis+sentinel://`, ... and the Redis clients."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from llmkit.errors import BackendError, ConfigError
from llmkit.settings import mask_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis

T = TypeVar("T", int, float, str, bool)

log = logging.getLogger("llmkit.redis")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL: scheme, address, database number and query parameters."""

    raw: str
    scheme: str
    host: str = "127.0.0.1"
    port: int | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    # redis+sentinel://: the sentinels' (host, port) pairs and the name of the master they watch.
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""

    def get(self, name: str, kind: type[T], default: T) -> T:
        """A query parameter converted to `kind`, or `default`; a wrong value is a ConfigError."""
        text = self.params.get(name)
        if text is None:
            return default
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(text)
                return lowered in _TRUE
            return kind(text)
        except ValueError:
            raise ConfigError(
                f"{mask_url(self.raw)}: parameter {name} must be {kind.__name__}; got {text!r}"
            ) from None

    def check_params(self, allowed: Iterable[str]) -> None:
        """Reject query parameters this backend does not know, listing the ones it does."""
        allowed = sorted(allowed)
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{mask_url(self.raw)}: unknown parameter {', '.join(unknown)}; "
                f"valid parameters: {', '.join(allowed) or 'none'}"
            )


SENTINEL = "redis+sentinel"
SENTINEL_PORT = 26379


def parse_backend_url(url: str, kind: str, known: Iterable[str]) -> BackendURL:
    """Split `url` for a backend of `kind`; an unknown scheme is a ConfigError listing the known ones."""
    known = list(known)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in known:
        raise ConfigError(
            f"{kind} URL {mask_url(url)!r}: unknown scheme {scheme or '(none)'!r}; "
            f"known schemes: {', '.join(s + '://' for s in known)}"
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme.endswith(SENTINEL):
        return _sentinel_url(url, kind, scheme, parts.netloc, parts.path, params)
    path = parts.path.strip("/")
    db = 0
    if path and path.isdigit():
        db = int(path)
    elif path and scheme.endswith("redis"):
        raise ConfigError(f"{kind} URL {mask_url(url)!r}: the path must be a database number, got {path!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{kind} URL {mask_url(url)!r}: {exc}") from None
    return BackendURL(
        raw=url,
        scheme=scheme,
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        params=params,
    )


def _sentinel_url(
    url: str, kind: str, scheme: str, netloc: str, path: str, params: dict[str, str]
) -> BackendURL:
    """`redis+sentinel://[user:password@]host:26379,host:26380/<master name>[/<db>]`."""
    where = f"{kind} URL {mask_url(url)!r}"
    form = "redis+sentinel://host:26379,host:26380/<master name>/<db>"
    userinfo, at, hosts = netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    sentinels = []
    for item in hosts.split(","):
        host, port = _host_port(item.strip(), where)
        sentinels.append((host, port))
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigError(f"{where}: name the master the sentinels watch, as in {form}")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(f"{where}: the database must be a number, got {segments[1]!r} ({form})")
        db = int(segments[1])
    return BackendURL(
        raw=url,
        scheme=scheme,
        host=sentinels[0][0],
        port=sentinels[0][1],
        db=db,
        username=unquote(user) if user else None,
        password=unquote(password) if password else None,
        params=params,
        sentinels=tuple(sentinels),
        service=unquote(segments[0]),
    )


def _host_port(item: str, where: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` of one sentinel (port 26379 by default)."""
    host, port_text = item, ""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    if not host:
        raise ConfigError(f"{where}: a sentinel address is empty; list them as host:port,host:port")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: sentinel port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def replicas_of(url: BackendURL) -> int:
    """How many replicas must hold a write before it is acknowledged (`replicas=`): 1 by default behind
    sentinels, whose failover would otherwise drop writes the replica had not received yet; 0 otherwise."""
    replicas = url.get("replicas", int, 1 if url.sentinels else 0)
    if replicas < 0:
        raise ConfigError(f"{mask_url(url.raw)}: parameter replicas must be >= 0; got {replicas}")
    return replicas


# How long the count of a master's replicas in sync is trusted before it is read again.
REPLICAS_CHECK_S = 1.0


class Replication:
    """Acknowledges a write once `wanted` replicas hold it, or every replica the master has in sync when
    it has fewer (after a failover the new master has none until the old one returns as its replica: the
    writes then go on, as durable as one server makes them, and the shortfall is logged once).

    A write is sent with `WAIT n` on the connection that wrote it, n = `needed()`. Fewer confirmations
    than that is an error: the write is not acknowledged."""

    def __init__(self, client: aioredis.Redis, wanted: int, wait_s: float, what: str) -> None:
        self.client = client
        self.wanted = wanted
        self.wait_s = wait_s
        self.what = what
        self._needed = wanted
        self._checked_at = -REPLICAS_CHECK_S
        self._short = False

    async def needed(self) -> int:
        """How many confirmations a write needs now: `wanted`, or fewer while the master has fewer."""
        if not self.wanted:
            return 0
        if self._needed < self.wanted and time.monotonic() - self._checked_at >= REPLICAS_CHECK_S:
            await self._count()
        return self._needed

    async def confirm(self, acked: int, needed: int) -> None:
        """Raise unless `acked` replicas (of `needed`) confirmed; a master that lost a replica in between
        counts again, so the next write waits for the replicas it has."""
        if acked >= needed:
            return
        await self._count()
        raise BackendError(
            f"redis {self.what}: only {acked} of {needed} replicas confirmed the write within "
            f"{self.wait_s:g}s, so it is not acknowledged (a failover could lose it)"
        )

    async def _count(self) -> None:
        with redis_errors(f"{self.what} (replication info)"):
            info = await self.client.info("replication")
        in_sync = sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )
        self._checked_at = time.monotonic()
        self._needed = min(self.wanted, in_sync)
        short = self._needed < self.wanted
        if short != self._short:
            self._short = short
            if short:
                log.warning(
                    "redis %s: the master has %d replicas in sync, %d wanted: writes are acknowledged "
                    "once those %d hold them",
                    self.what,
                    in_sync,
                    self.wanted,
                    self._needed,
                )
            else:
                log.info("redis %s: %d replicas in sync again", self.what, in_sync)


def make_redis(
    url: BackendURL, timeout: float = 2.0, max_connections: int = 64, **extra: Any
) -> aioredis.Redis:
    """A redis.asyncio client with a bounded connection pool and per-operation socket timeouts.

    The pool blocks (up to `timeout`) when every connection is busy, rather than raising "Too many
    connections", so bursts of concurrent commands queue instead of failing.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # A restarted server leaves every pooled connection dead, and a client built on a pool retries nothing
    # by default: one immediate retry on a fresh connection turns each into a reconnect, not an error.
    extra.setdefault("retry", Retry(NoBackoff(), 1))
    extra.setdefault("retry_on_error", [RedisConnectionError])
    common: dict[str, Any] = {
        "timeout": timeout,
        "db": url.db,
        "username": url.username,
        "password": url.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": max_connections,
        **extra,
    }
    pool: aioredis.ConnectionPool
    if url.sentinels:
        pool = _sentinel_pool(url, timeout, common)
    else:
        pool = aioredis.BlockingConnectionPool(host=url.host, port=url.port or 6379, **common)
    # from_pool hands the pool to the client, so a plain `await client.aclose()` closes its connections too.
    return aioredis.Redis.from_pool(pool)


def _sentinel_pool(url: BackendURL, timeout: float, common: dict[str, Any]) -> aioredis.ConnectionPool:
    """A blocking pool of connections to whichever server the sentinels name master right now.

    Each new connection asks the sentinels; a connection to a demoted master fails (READONLY or a
    reset), and the next one goes to the new master. Sentinels take no password here: the URL's is the
    master's (and its replicas')."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """SentinelConnectionPool's master discovery with BlockingConnectionPool's waiting for a free one."""

        async def aclose(self) -> None:
            """Close the connections, then the ones to the sentinels (redis-py leaves those open)."""
            await super().aclose()
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()

    manager = Sentinel(list(url.sentinels), socket_timeout=timeout, socket_connect_timeout=timeout)
    return BlockingSentinelPool(url.service, manager, **common)


def driver_failure(exc: BaseException) -> bool:
    """Whether `exc` is the Redis driver failing (what becomes BackendError): its own errors, socket errors,
    timeouts, and uvloop's RuntimeError for a write to a connection that closed under redis-py (a master
    crashing between connect and the first command: "unable to perform operation on <TCPTransport
    closed=True ...>; the handler is closed"), which redis-py passes on as it is."""
    from redis.exceptions import RedisError

    if isinstance(exc, RedisError | OSError | TimeoutError):
        return True
    return isinstance(exc, RuntimeError) and "the handler is closed" in str(exc)


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Driver, socket and timeout errors -> BackendError naming the operation; a lost cancel is re-raised."""
    import asyncio

    # Python 3.11's asyncio.wait_for, which redis-py uses to send every command when a socket timeout is
    # set, drops a cancel that lands just as the send completes (CPython gh-86296, fixed in 3.12). The
    # task's cancel count still records it: raise it here, or a cancelled worker runs on (and close hangs).
    # Also when the command then fails (its master just died): as a BackendError the cancel would be lost
    # on a caller that retries those, as a lease heartbeat does, and beat on for ever.
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception as exc:
        if not driver_failure(exc):
            raise
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError from exc
        raise BackendError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
