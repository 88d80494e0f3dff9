"""How the PostgreSQL store reports driver failures: an outage is a BackendError, a cancellation stays one."""

import asyncio

import asyncpg
import pytest

from llmkit.errors import BackendError
from llmkit.platform.store.postgres import PostgresPlatformStore


def opened_store() -> PostgresPlatformStore:
    store = PostgresPlatformStore("postgresql://u:secret-password@127.0.0.1:1/db")
    store._pool = object()  # type: ignore[assignment]  # _errors only checks that a pool is open
    return store


async def test_a_driver_failure_is_a_backend_error_without_the_password() -> None:
    store = opened_store()
    with pytest.raises(BackendError) as caught:
        async with store._errors():
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress")
    assert "cannot switch to state 15" in str(caught.value)
    assert "secret-password" not in str(caught.value)


async def test_a_driver_failure_while_a_cancellation_unwinds_stays_a_cancellation() -> None:
    # asyncpg's pool resets a connection whose query a cancellation interrupted, and that reset can fail
    # (MagicStack/asyncpg#784): a worker stopped at shutdown must still end cancelled, not with an error.
    store = opened_store()
    started = asyncio.Event()

    async def worker() -> None:
        async with store._errors():
            try:
                started.set()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise asyncpg.InternalClientError("cannot switch to state 15") from None

    task = asyncio.create_task(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
