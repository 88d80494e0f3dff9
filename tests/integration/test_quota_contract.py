"""One contract for every quota counter backend: fixed UTC windows and an all-or-nothing consume."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from llmkit.core.backends import make_redis, parse_backend_url
from llmkit.core.limiter import QuotaCounter, Window, quota_counter_from_url
from llmkit.core.limiter.quota_memory import MemoryQuotaCounter
from llmkit.core.limiter.quota_redis import RedisQuotaCounter
from llmkit.errors import BackendError, ConfigError
from tests.clock import Clock, epoch
from tests.servers import RedisServer

# (clock) -> a counter on the backend under test; every counter made is closed after the test.
MakeCounter = Callable[[Callable[[], float]], QuotaCounter]


# Redis expires keys on its own (real) clock, so test dates lie in the future, where keys outlive the test.
# 12:00:10 UTC on a mid-month day: 50 s to the end of the minute, 12 h to midnight.
NOON = epoch(2031, 3, 15, 12, 0, 10)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_counter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[MakeCounter]:
    made: list[QuotaCounter] = []
    client: aioredis.Redis | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = aioredis.Redis.from_url(server.url)

    def make(clock: Callable[[], float]) -> QuotaCounter:
        counter: QuotaCounter
        if client is None:
            counter = MemoryQuotaCounter(clock=clock)
        else:
            counter = RedisQuotaCounter(client, prefix=redis_prefix, clock=clock)
        made.append(counter)
        return counter

    yield make
    for counter in made:
        await counter.close()
    if client is not None:
        await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def counter(make_counter: MakeCounter, clock: Clock) -> QuotaCounter:
    return make_counter(clock)


async def test_consume_allows_up_to_the_limit_then_refuses(counter: QuotaCounter) -> None:
    window = Window("requests", 3, "minute")
    decisions = [await counter.consume("k", [window], 1) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.windows[0].used for d in decisions] == [1, 2, 3, 3]
    assert [d.windows[0].remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.denied is None for d in decisions[:3])
    denied = decisions[3].denied
    assert denied is not None and denied == decisions[3].windows[0]
    assert (denied.name, denied.limit, denied.used, denied.remaining) == ("requests", 3, 3, 0)
    assert denied.reset_at == epoch(2031, 3, 15, 12, 1)


async def test_a_cost_that_does_not_fit_adds_nothing(counter: QuotaCounter) -> None:
    window = Window("tokens", 10, "minute")
    assert (await counter.consume("k", [window], 7)).allowed
    refused = await counter.consume("k", [window], 4)
    assert not refused.allowed and refused.windows[0].used == 7
    assert (await counter.consume("k", [window], 3)).windows[0].remaining == 0


async def test_cost_zero_checks_whether_anything_is_left(counter: QuotaCounter) -> None:
    window = Window("tokens", 5, "minute")
    check = await counter.consume("k", [window], 0)
    assert check.allowed and check.windows[0].used == 0
    await counter.add("k", [window], 5)
    assert not (await counter.consume("k", [window], 0)).allowed


async def test_consume_is_all_or_nothing_across_windows(counter: QuotaCounter) -> None:
    minute, day = Window("tokens", 100, "minute"), Window("tokens-day", 10, "day")
    first = await counter.consume("k", [minute, day], 8)
    assert first.allowed and [s.used for s in first.windows] == [8, 8]
    second = await counter.consume("k", [minute, day], 5)
    assert not second.allowed
    assert second.denied is not None and second.denied.name == "tokens-day"
    assert [s.used for s in second.windows] == [8, 8]  # the minute window, which had room, got nothing
    assert [s.used for s in await counter.usage("k", [minute, day])] == [8, 8]


async def test_the_first_refusing_window_is_named(counter: QuotaCounter) -> None:
    a, b = Window("a", 1, "minute"), Window("b", 1, "day")
    await counter.add("k", [a, b], 1)
    decision = await counter.consume("k", [a, b], 1)
    assert decision.denied is not None and decision.denied.name == "a"


async def test_checked_windows_must_have_room_and_are_not_charged(counter: QuotaCounter) -> None:
    requests, tokens = Window("requests", 5, "minute"), Window("tokens", 10, "minute")
    first = await counter.consume("k", [requests], 1, checked=[tokens])
    assert first.allowed and [(s.name, s.used) for s in first.windows] == [("requests", 1), ("tokens", 0)]
    await counter.add("k", [tokens], 10)
    spent = await counter.consume("k", [requests], 1, checked=[tokens])
    assert not spent.allowed and spent.denied is not None and spent.denied.name == "tokens"
    # All or nothing: the refused call charged no request.
    assert [s.used for s in await counter.usage("k", [requests, tokens])] == [1, 10]


async def test_add_goes_over_the_limit_and_then_consume_refuses(counter: QuotaCounter) -> None:
    window = Window("tokens", 10, "minute")
    states = await counter.add("k", [window], 25)
    assert (states[0].used, states[0].remaining, states[0].limit) == (25, 0, 10)
    assert not (await counter.consume("k", [window], 0)).allowed
    assert (await counter.add("k", [window], 0))[0].used == 25


async def test_usage_changes_nothing_and_reads_zero_for_a_new_key(counter: QuotaCounter) -> None:
    window = Window("requests", 4, "minute")
    assert await counter.usage("fresh", [window]) == await counter.usage("fresh", [window])
    state = (await counter.usage("fresh", [window]))[0]
    assert (state.used, state.remaining) == (0, 4)
    await counter.consume("fresh", [window], 1)
    assert (await counter.usage("fresh", [window]))[0].used == 1


async def test_keys_and_window_names_are_independent(counter: QuotaCounter) -> None:
    requests, tokens = Window("requests", 1, "minute"), Window("tokens", 1, "minute")
    assert (await counter.consume("a", [requests], 1)).allowed
    assert not (await counter.consume("a", [requests], 1)).allowed
    assert (await counter.consume("b", [requests], 1)).allowed
    assert (await counter.consume("a", [tokens], 1)).allowed


async def test_no_windows_is_allowed(counter: QuotaCounter) -> None:
    decision = await counter.consume("k", [], 5)
    assert decision.allowed and decision.windows == () and decision.denied is None
    assert await counter.add("k", [], 5) == []
    assert await counter.usage("k", []) == []


async def test_negative_amounts_are_refused(counter: QuotaCounter) -> None:
    window = Window("tokens", 5, "minute")
    with pytest.raises(ValueError, match="cost"):
        await counter.consume("k", [window], -1)
    with pytest.raises(ValueError, match="amount"):
        await counter.add("k", [window], -1)


async def test_concurrent_consumes_allow_exactly_the_limit(counter: QuotaCounter) -> None:
    window = Window("requests", 10, "minute")
    decisions = await asyncio.gather(*(counter.consume("k", [window], 1) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.windows[0].used for d in decisions if d.allowed) == list(range(1, 11))


async def test_the_minute_window_rolls_over(counter: QuotaCounter, clock: Clock) -> None:
    window = Window("requests", 2, "minute")
    clock.now = epoch(2031, 3, 15, 12, 0, 59) + 0.999
    await counter.consume("k", [window], 2)
    refused = await counter.consume("k", [window], 1)
    assert not refused.allowed and refused.windows[0].reset_at == epoch(2031, 3, 15, 12, 1)
    clock.now = epoch(2031, 3, 15, 12, 1)
    fresh = await counter.consume("k", [window], 1)
    assert fresh.allowed and fresh.windows[0].used == 1
    assert fresh.windows[0].reset_at == epoch(2031, 3, 15, 12, 2)


async def test_the_day_window_ends_at_utc_midnight(counter: QuotaCounter, clock: Clock) -> None:
    window = Window("tokens-day", 100, "day")
    clock.now = epoch(2031, 3, 15, 23, 59, 59)
    state = (await counter.add("k", [window], 100))[0]
    assert state.reset_at == epoch(2031, 3, 16)
    assert not (await counter.consume("k", [window], 0)).allowed
    clock.now = epoch(2031, 3, 16, 0, 0, 1)
    assert (await counter.usage("k", [window]))[0].used == 0


@pytest.mark.parametrize(
    ("last", "first", "end"),
    [
        ((2031, 1, 31, 23, 59, 59), (2031, 2, 1), (2031, 3, 1)),
        ((2031, 12, 31, 23, 59, 59), (2032, 1, 1), (2032, 2, 1)),
        ((2032, 2, 29, 12), (2032, 3, 1), (2032, 4, 1)),
    ],
    ids=["jan-feb", "dec-jan", "leap-feb-mar"],
)
async def test_the_month_window_follows_the_utc_calendar(
    counter: QuotaCounter,
    clock: Clock,
    last: tuple[int, ...],
    first: tuple[int, ...],
    end: tuple[int, ...],
) -> None:
    window = Window("tokens-month", 1000, "month")
    clock.now = epoch(*last)
    state = (await counter.add("k", [window], 1000))[0]
    assert state.reset_at == epoch(*first)
    assert not (await counter.consume("k", [window], 1)).allowed
    clock.now = epoch(*first)
    fresh = await counter.consume("k", [window], 1)
    assert fresh.allowed and fresh.windows[0].used == 1 and fresh.windows[0].reset_at == epoch(*end)


async def test_two_counters_on_one_store_share_counts(make_counter: MakeCounter, clock: Clock) -> None:
    # On memory each counter is its own store, so only Redis counters share; the test states both.
    first, second = make_counter(clock), make_counter(clock)
    window = Window("requests", 1, "minute")
    assert (await first.consume("k", [window], 1)).allowed
    shared = isinstance(second, RedisQuotaCounter)
    assert (await second.consume("k", [window], 1)).allowed is not shared


def test_windows_are_validated() -> None:
    with pytest.raises(ValueError, match="period"):
        Window("requests", 1, "hour")
    with pytest.raises(ValueError, match="limit"):
        Window("requests", 0, "minute")
    with pytest.raises(ValueError, match="limit"):
        Window("requests", True, "minute")
    with pytest.raises(ValueError, match="name"):
        Window("", 1, "minute")


# Redis only: replicas, expiry, errors, the URL factory.


@pytest.mark.redis
async def test_independent_clients_allow_exactly_the_limit(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    # Each counter has its own client and connection pool, as separate gateway replicas would.
    limit, replicas, per_replica = 37, 6, 30
    # A fixed clock: on the real one, a run crossing a minute boundary would count in two windows.
    clock = Clock(NOON)
    url = parse_backend_url(redis_server.url, "quota counter", ["redis"])
    counters = [
        RedisQuotaCounter(make_redis(url), prefix=redis_prefix, clock=clock, close_client=True)
        for _ in range(replicas)
    ]
    window = Window("requests", limit, "minute")
    try:
        decisions = await asyncio.gather(
            *(c.consume("shared", [window], 1) for c in counters for _ in range(per_replica))
        )
    finally:
        for c in counters:
            await c.close()
    assert sum(d.allowed for d in decisions) == limit
    assert sorted(d.windows[0].used for d in decisions if d.allowed) == list(range(1, limit + 1))


# One replica: connects, says "ready", waits for "go" on stdin, consumes COUNT times, prints how many it got.
REPLICA = """
import asyncio, sys
from llmkit.core.backends import make_redis, parse_backend_url
from llmkit.core.limiter import Window
from llmkit.core.limiter.quota_redis import RedisQuotaCounter

async def main(url, prefix, limit, count, now):
    client = make_redis(parse_backend_url(url, "quota counter", ["redis"]))
    counter = RedisQuotaCounter(client, prefix=prefix, clock=lambda: now, close_client=True)
    await client.ping()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    window = Window("requests", limit, "minute")
    decisions = await asyncio.gather(*(counter.consume("shared", [window], 1) for _ in range(count)))
    print(sum(d.allowed for d in decisions), flush=True)
    await counter.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
"""


@pytest.mark.redis
async def test_replica_processes_allow_exactly_the_limit(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    limit, replicas, count = 61, 4, 50
    args = (redis_server.url, redis_prefix, limit, count, NOON)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REPLICA,
            *(str(arg) for arg in args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(replicas)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        # Every replica starts hammering at once, once all are connected.
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert all(proc.returncode == 0 for proc in procs)
    allowed = [int(out.strip()) for out, _ in outputs]
    assert sum(allowed) == limit, allowed


@pytest.mark.redis
async def test_keys_are_named_and_expire_after_their_window(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = Clock(NOON)
    counter = RedisQuotaCounter(redis_client, prefix=redis_prefix, clock=clock, margin=60)
    await counter.add("t1", [Window("tokens", 5, "minute")], 3)
    start = int(epoch(2031, 3, 15, 12))
    key = f"{redis_prefix}:quota:t1:tokens:{start}"
    assert await redis_client.get(key) == b"3"
    assert await redis_client.pexpiretime(key) == (start + 60 + 60) * 1000
    # A refusal and a check write nothing.
    await counter.consume("t1", [Window("other", 1, "minute")], 2)
    assert await redis_client.exists(f"{redis_prefix}:quota:t1:other:{start}") == 0


@pytest.mark.redis
async def test_a_stopped_server_is_a_backend_error(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    counter = quota_counter_from_url(f"{server.url}?timeout=0.5")
    try:
        server.stop()
        with pytest.raises(BackendError, match="quota counter"):
            await counter.consume("k", [Window("requests", 1, "minute")], 1)
    finally:
        await counter.close()


async def test_the_url_factory_knows_its_schemes() -> None:
    memory = quota_counter_from_url("memory://")
    assert isinstance(memory, MemoryQuotaCounter)
    await memory.close()
    with pytest.raises(ConfigError, match="memory://, redis://"):
        quota_counter_from_url("sqlite:///x.db")
    with pytest.raises(ConfigError, match="valid parameters: margin, max_connections, prefix, timeout"):
        quota_counter_from_url("redis://127.0.0.1:1/0?lease=3")
    with pytest.raises(ConfigError, match="timeout"):
        quota_counter_from_url("redis://127.0.0.1:1/0?timeout=0")
