"""core.backends.redis_errors: driver errors become BackendError, and a cancel the driver lost is raised."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from llmkit.core.backends import redis_errors
from llmkit.errors import BackendError


async def test_a_driver_error_becomes_a_backend_error_naming_the_operation() -> None:
    with pytest.raises(BackendError, match="redis queue extend failed: ConnectionError: refused"):
        with redis_errors("queue extend"):
            raise redis.exceptions.ConnectionError("refused")


async def lost_cancel(fails: bool) -> str:
    """A command whose driver swallows the cancel that lands while it runs (redis-py's sends go through
    asyncio.wait_for, which on Python 3.11 drops a cancel arriving as the send completes: CPython gh-86296),
    then answers or, its master having died meanwhile, fails."""
    with redis_errors("queue extend"):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if fails:
                raise redis.exceptions.ConnectionError("Connection closed by server.") from None
        return "answered"


@pytest.mark.parametrize("fails", [False, True], ids=["then-answers", "then-fails"])
async def test_a_cancel_the_driver_lost_is_raised_whether_the_command_answers_or_fails(fails: bool) -> None:
    # Wrapped in a BackendError instead, a failing command would hide the cancel from a caller that retries
    # on BackendError (a lease heartbeat): the cancelled task would then run on for ever.
    task = asyncio.create_task(lost_cancel(fails))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


CLOSED = "unable to perform operation on <TCPTransport closed=True reading=False 0x55>; the handler is closed"


async def test_uvloops_write_to_a_closed_connection_is_a_driver_failure_too() -> None:
    # redis-py passes it on as it is when the master dies between connect and its first command: it was
    # answered as a 500 where every other outage is a 503.
    with pytest.raises(BackendError, match="redis job write failed: RuntimeError: unable to perform"):
        with redis_errors("job write"):
            raise RuntimeError(CLOSED)


async def test_other_runtime_errors_are_not_hidden_as_outages() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        with redis_errors("job write"):
            raise RuntimeError("a bug")


async def test_the_redis_cache_maps_a_closed_connection_to_a_backend_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis.asyncio as aioredis

    from llmkit.core.cache.redis import RedisCache

    async def closed(*_: object) -> None:
        raise RuntimeError(CLOSED)

    client = aioredis.Redis(host="127.0.0.1", port=1)  # never connected: its GET is replaced
    monkeypatch.setattr(client, "get", closed)
    cache = RedisCache(client, timeout=1.0)
    with pytest.raises(BackendError, match="redis cache at redis://127.0.0.1:1/0: GET failed"):
        await cache.get("k")
    await client.aclose()
