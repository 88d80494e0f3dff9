"""Backend URLs: one parser for `memory://`, `redis://`, ... and the Redis client they build."""

from __future__ import annotations

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
    pool = aioredis.BlockingConnectionPool(
        timeout=timeout,
        host=url.host,
        port=url.port or 6379,
        db=url.db,
        username=url.username,
        password=url.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        **extra,
    )
    # from_pool hands the pool to the client, so a plain `await client.aclose()` closes its connections too.
    return aioredis.Redis.from_pool(pool)


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Driver, socket and timeout errors -> BackendError naming the operation; a lost cancel is re-raised."""
    import asyncio

    from redis.exceptions import RedisError

    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise BackendError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc
    # Python 3.11's asyncio.wait_for, which redis-py uses to send every command when a socket timeout is
    # set, drops a cancel that lands just as the send completes (CPython gh-86296, fixed in 3.12). The
    # task's cancel count still records it: raise it here, or a cancelled worker runs on (and close hangs).
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
