"""Per-tenant quotas on memory and on a real Redis shared by several enforcers, as replicas share it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.limiter.base import WindowState
from llmkit.core.limiter.quota_memory import MemoryQuotaCounter
from llmkit.core.limiter.quota_redis import RedisQuotaCounter
from llmkit.errors import ConfigError, RateLimited
from llmkit.platform.quota_types import Quotas
from llmkit.platform.quotas import (
    Admission,
    MemoryTenantSlots,
    QuotaEnforcer,
    QuotaExceeded,
    QuotaPlan,
    RedisTenantSlots,
    go_duration,
    quota_enforcer_from_url,
    quota_headers,
)
from tests.clock import Clock, epoch
from tests.servers import RedisServer

# () -> one more enforcer on the store under test (Redis: its own client and pool, as a replica has).
MakeEnforcer = Callable[[], QuotaEnforcer]


# In the future, since Redis expires the counters on its real clock; 12.3 s before the minute ends.
NOW = epoch(2031, 5, 20, 12, 0, 47) + 0.7


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


# "memory" admits on the counter's live cells (QuotaEnforcer.local); "memory-decisions" takes the path every
# other counter takes (consume/add answering states) over the same in-process counter: both must agree.
@pytest.fixture(params=["memory", "memory-decisions", pytest.param("redis", marks=pytest.mark.redis)])
async def make_enforcer(
    request: pytest.FixtureRequest, redis_prefix: str, clock: Clock
) -> AsyncIterator[MakeEnforcer]:
    made: list[QuotaEnforcer] = []
    # Memory enforcers share one store, the way several parts of one process would.
    counter, slots = MemoryQuotaCounter(clock=clock), MemoryTenantSlots()

    def make() -> QuotaEnforcer:
        if request.param.startswith("memory"):
            enforcer = QuotaEnforcer(counter, slots, clock=clock)
            if request.param == "memory-decisions":
                enforcer.local = None
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            client = aioredis.Redis.from_url(server.url)
            enforcer = QuotaEnforcer(
                RedisQuotaCounter(client, prefix=redis_prefix, clock=clock, close_client=True),
                RedisTenantSlots(client, prefix=redis_prefix),
                clock=clock,
            )
        made.append(enforcer)
        return enforcer

    yield make
    for enforcer in made:
        await enforcer.close()


@pytest.fixture
def enforcer(make_enforcer: MakeEnforcer) -> QuotaEnforcer:
    return make_enforcer()


async def refused(enforcer: QuotaEnforcer, tenant: str, quotas: Quotas) -> QuotaExceeded:
    """The QuotaExceeded that admit raises (and fails the test if it lets the request in)."""
    with pytest.raises(QuotaExceeded) as caught:
        await enforcer.admit(tenant, quotas)
    return caught.value


async def test_rpm_is_exact_across_two_enforcers(make_enforcer: MakeEnforcer) -> None:
    first, second = make_enforcer(), make_enforcer()
    quotas = Quotas(rpm=25)

    async def attempt(enforcer: QuotaEnforcer) -> Admission | QuotaExceeded:
        try:
            return await enforcer.admit("t1", quotas)
        except QuotaExceeded as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(e) for _ in range(40) for e in (first, second)))
    admitted = [o for o in outcomes if isinstance(o, Admission)]
    assert len(admitted) == 25
    assert {o.quota for o in outcomes if isinstance(o, QuotaExceeded)} == {"rpm"}


async def test_rpm_refusal_says_which_quota_and_when_it_resets(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=10)
    for _ in range(10):
        await enforcer.admit("t1", quotas)
    exc = await refused(enforcer, "t1", quotas)
    assert isinstance(exc, RateLimited) and exc.status == 429
    assert (exc.tenant_id, exc.quota) == ("t1", "rpm")
    assert str(exc) == "tenant 't1' reached its rpm quota of 10 requests per minute; it resets in 12.3 s"
    assert exc.retry_after == pytest.approx(12.3)
    assert exc.headers == {
        "Retry-After": "13",
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "12.3s",
    }


async def test_rpm_rolls_over_with_the_minute(enforcer: QuotaEnforcer, clock: Clock) -> None:
    quotas = Quotas(rpm=1)
    await enforcer.admit("t1", quotas)
    await refused(enforcer, "t1", quotas)
    clock.now = epoch(2031, 5, 20, 12, 1)
    assert (await enforcer.admit("t1", quotas)).headers()["x-ratelimit-remaining-requests"] == "0"


async def test_tokens_over_tpm_refuse_the_next_request_until_the_minute_ends(
    enforcer: QuotaEnforcer, clock: Clock
) -> None:
    quotas = Quotas(rpm=100, tpm=100)
    admission = await enforcer.admit("t1", quotas)
    await admission.settle(150)  # counted after the answer, so it may go over
    assert admission.headers()["x-ratelimit-remaining-tokens"] == "0"
    exc = await refused(enforcer, "t1", quotas)
    assert exc.quota == "tpm"
    assert str(exc) == "tenant 't1' reached its tpm quota of 100 tokens per minute; it resets in 12.3 s"
    assert exc.headers["Retry-After"] == "13"
    assert exc.headers["x-ratelimit-reset-tokens"] == "12.3s"
    # The refused request did not count against rpm.
    assert exc.headers["x-ratelimit-remaining-requests"] == "99"
    clock.now = epoch(2031, 5, 20, 12, 1)
    assert (await enforcer.admit("t1", quotas)).headers()["x-ratelimit-remaining-tokens"] == "100"


async def test_an_answer_that_outlives_its_minute_counts_its_tokens_in_the_next(
    enforcer: QuotaEnforcer, clock: Clock
) -> None:
    quotas = Quotas(rpm=100, tpm=100, daily_tokens=1000)
    admission = await enforcer.admit("t1", quotas)
    before = admission.headers()
    assert (before["x-ratelimit-remaining-tokens"], before["x-ratelimit-remaining-tokens-day"]) == (
        "100",
        "1000",
    )
    clock.now = epoch(2031, 5, 20, 12, 1, 30)
    await admission.settle(40)
    nxt = await enforcer.admit("t1", quotas)
    await nxt.settle(0)
    headers = nxt.headers()
    assert headers["x-ratelimit-remaining-tokens"] == "60"  # the new minute has the 40 tokens
    assert headers["x-ratelimit-remaining-requests"] == "99"  # and only its own request
    assert headers["x-ratelimit-remaining-tokens-day"] == "960"
    assert headers["x-ratelimit-reset-tokens"] == "30s"


async def test_headers_of_an_admission_count_what_others_used_since(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=10, tpm=1000)
    first = await enforcer.admit("t1", quotas)
    second = await enforcer.admit("t1", quotas)
    await second.settle(300)
    await first.settle(200)
    # Both settled: the last to settle sees every token counted (the answer a client gets).
    assert first.headers()["x-ratelimit-remaining-tokens"] == "500"


async def test_settling_with_no_await_counts_once_like_settling(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=10, tpm=1000)
    admission = await enforcer.admit("t1", quotas)
    headers = admission.settle_now(300)
    if enforcer.local is None:  # counted elsewhere: the caller awaits settle() instead
        assert headers is None and not admission.settled
        await admission.settle(300)
        headers = admission.headers()
    else:
        assert headers is not None and admission.settled
        assert admission.settle_now(5) is None  # settled once
    assert (headers["x-ratelimit-remaining-tokens"], headers["x-ratelimit-remaining-requests"]) == (
        "700",
        "9",
    )
    second = await enforcer.admit("t1", quotas)
    await second.settle(0)
    assert second.headers()["x-ratelimit-remaining-tokens"] == "700"


async def test_a_plan_with_a_slot_is_never_admitted_without_an_await(enforcer: QuotaEnforcer) -> None:
    assert enforcer.admit_now("t1", enforcer.plan(Quotas(rpm=5, max_concurrent=2))) is None
    admitted = enforcer.admit_now("t1", enforcer.plan(Quotas(rpm=5)))
    assert (admitted is None) == (enforcer.local is None)


async def test_daily_tokens_reset_at_utc_midnight(enforcer: QuotaEnforcer, clock: Clock) -> None:
    quotas = Quotas(daily_tokens=1000)
    clock.now = epoch(2031, 5, 20, 23, 59)
    await (await enforcer.admit("t1", quotas)).settle(1000)
    exc = await refused(enforcer, "t1", quotas)
    assert exc.quota == "daily_tokens" and exc.retry_after == 60
    assert exc.headers["Retry-After"] == "60"
    assert exc.headers["x-ratelimit-reset-tokens-day"] == "1m0s"
    assert "1000 tokens per day (UTC)" in str(exc)
    clock.now = epoch(2031, 5, 21)
    headers = (await enforcer.admit("t1", quotas)).headers()
    assert headers["x-ratelimit-remaining-tokens-day"] == "1000"
    assert headers["x-ratelimit-reset-tokens-day"] == "24h0m0s"


async def test_monthly_tokens_reset_on_the_first_of_the_month(enforcer: QuotaEnforcer, clock: Clock) -> None:
    quotas = Quotas(monthly_tokens=5000)
    clock.now = epoch(2031, 1, 31, 23, 0)
    admission = await enforcer.admit("t1", quotas)
    await admission.settle(4999)
    await (await enforcer.admit("t1", quotas)).settle(1)
    exc = await refused(enforcer, "t1", quotas)
    assert exc.quota == "monthly_tokens" and exc.headers["x-ratelimit-reset-tokens-month"] == "1h0m0s"
    clock.now = epoch(2031, 2, 1)
    headers = (await enforcer.admit("t1", quotas)).headers()
    assert headers["x-ratelimit-remaining-tokens-month"] == "5000"
    assert headers["x-ratelimit-reset-tokens-month"] == f"{28 * 24}h0m0s"


async def test_max_concurrent_refuses_at_once_and_frees_on_settle(make_enforcer: MakeEnforcer) -> None:
    first, second = make_enforcer(), make_enforcer()
    quotas = Quotas(max_concurrent=2)
    one = await first.admit("t1", quotas)
    two = await second.admit("t1", quotas)
    assert one.headers()["x-ratelimit-remaining-concurrent"] == "1"
    assert two.headers()["x-ratelimit-remaining-concurrent"] == "0"
    exc = await asyncio.wait_for(refused(first, "t1", quotas), 1)  # no waiting for a slot
    assert exc.quota == "max_concurrent" and exc.retry_after == 1.0
    assert exc.headers == {
        "Retry-After": "1",
        "x-ratelimit-limit-concurrent": "2",
        "x-ratelimit-remaining-concurrent": "0",
    }
    assert "max_concurrent quota of 2 requests in flight" in str(exc)
    await one.settle(0)
    await one.settle(0)  # idempotent: frees one slot, not two
    three = await second.admit("t1", quotas)
    await refused(first, "t1", quotas)
    await two.settle(10)
    await three.settle(10)
    assert await first.slots.in_use("t1") == 0


async def test_a_refused_request_gives_its_slot_back(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=1, max_concurrent=5)
    await enforcer.admit("t1", quotas)
    exc = await refused(enforcer, "t1", quotas)
    assert exc.quota == "rpm"
    assert exc.headers["x-ratelimit-remaining-concurrent"] == "4"
    assert await enforcer.slots.in_use("t1") == 1


async def test_headers_count_down_and_list_only_the_tenants_quotas(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=5, tpm=1000, max_concurrent=3, daily_tokens=10_000, monthly_tokens=100_000)
    first = await enforcer.admit("t1", quotas)
    assert first.headers() == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12.3s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "1000",
        "x-ratelimit-reset-tokens": "12.3s",
        "x-ratelimit-limit-tokens-day": "10000",
        "x-ratelimit-remaining-tokens-day": "10000",
        "x-ratelimit-reset-tokens-day": "11h59m12.3s",
        "x-ratelimit-limit-tokens-month": "100000",
        "x-ratelimit-remaining-tokens-month": "100000",
        "x-ratelimit-reset-tokens-month": "275h59m12.3s",
        "x-ratelimit-limit-concurrent": "3",
        "x-ratelimit-remaining-concurrent": "2",
    }
    await first.settle(300)
    assert first.headers()["x-ratelimit-remaining-tokens"] == "700"
    second = await enforcer.admit("t1", quotas)
    headers = second.headers()
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-remaining-tokens-day"] == "9700"
    assert headers["x-ratelimit-remaining-concurrent"] == "2"  # the first one settled
    only_rpm = (await enforcer.admit("t2", Quotas(rpm=2))).headers()
    assert sorted(only_rpm) == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ]


async def test_a_tenants_quota_does_not_touch_another_tenant(enforcer: QuotaEnforcer) -> None:
    quotas = Quotas(rpm=1, tpm=10, max_concurrent=1)
    admission = await enforcer.admit("t1", quotas)
    await refused(enforcer, "t1", quotas)
    other = await enforcer.admit("t2", quotas)
    assert other.headers()["x-ratelimit-remaining-tokens"] == "10"
    await admission.settle(50)
    await other.settle(1)
    assert (await refused(enforcer, "t1", quotas)).quota == "tpm"


async def test_no_quotas_admit_everything_without_headers(enforcer: QuotaEnforcer) -> None:
    admissions = [await enforcer.admit("t1", Quotas()) for _ in range(50)]
    assert admissions[0].headers() == {}
    await admissions[0].settle(10**9)


async def test_settle_rejects_negative_tokens(enforcer: QuotaEnforcer) -> None:
    admission = await enforcer.admit("t1", Quotas(max_concurrent=1))
    with pytest.raises(ValueError, match="tokens"):
        await admission.settle(-1)
    await admission.settle(0)
    assert await enforcer.slots.in_use("t1") == 0


async def test_a_changed_max_concurrent_counts_slots_taken_before(enforcer: QuotaEnforcer) -> None:
    held = [await enforcer.admit("t1", Quotas(max_concurrent=2)) for _ in range(2)]
    await refused(enforcer, "t1", Quotas(max_concurrent=2))
    held.append(await enforcer.admit("t1", Quotas(max_concurrent=3)))
    await refused(enforcer, "t1", Quotas(max_concurrent=3))
    await refused(enforcer, "t1", Quotas(max_concurrent=1))
    for admission in held:
        await admission.settle(0)
    assert await enforcer.slots.in_use("t1") == 0
    await enforcer.admit("t1", Quotas(max_concurrent=1))


@pytest.mark.redis
async def test_the_url_factory_builds_a_redis_enforcer(redis_server: RedisServer, redis_prefix: str) -> None:
    first = quota_enforcer_from_url(f"{redis_server.url}?prefix={redis_prefix}&lease=5")
    second = quota_enforcer_from_url(f"{redis_server.url}?prefix={redis_prefix}")
    try:
        quotas = Quotas(rpm=3, max_concurrent=1)
        held = await first.admit("t1", quotas)
        assert (await refused(second, "t1", quotas)).quota == "max_concurrent"
        await held.settle(0)
        await second.admit("t1", quotas)
    finally:
        await first.close()
        await second.close()  # gives back the slot it still holds
    assert isinstance(first.counter, RedisQuotaCounter)


async def test_the_url_factory_rejects_what_it_does_not_know() -> None:
    memory = quota_enforcer_from_url("memory://")
    assert isinstance(memory.counter, MemoryQuotaCounter)
    await memory.close()
    with pytest.raises(ConfigError, match="known schemes: memory://, redis://"):
        quota_enforcer_from_url("postgresql://db/x")
    with pytest.raises(ConfigError, match="valid parameters: batch, lease, margin, max_connections, prefix"):
        quota_enforcer_from_url("redis://127.0.0.1:1/0?colour=1")
    with pytest.raises(ConfigError, match="lease"):
        quota_enforcer_from_url("redis://127.0.0.1:1/0?lease=0")


async def test_the_limiter_urls_own_parameters_are_accepted() -> None:
    """Quotas count in limiter.url: what a limiter URL may say must not stop the gateway."""
    memory = quota_enforcer_from_url("memory://?sweep_interval=5")
    await memory.close()
    redis = quota_enforcer_from_url("redis://127.0.0.1:1/0?batch=false&lease=10&prefix=x&timeout=1")
    assert isinstance(redis.counter, RedisQuotaCounter) and redis.counter.prefix == "x"
    await redis.close()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.02, "20ms"),
        (0.0201, "21ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
        (90061.25, "25h1m1.25s"),
    ],
)
def test_resets_are_go_durations_like_openai(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_headers_follow_the_plans_order_and_only_the_windows_given() -> None:
    plan = QuotaPlan(Quotas(rpm=10, tpm=1000, max_concurrent=2))
    now = epoch(2026, 1, 1)
    states = [WindowState("requests", 10, 3, 7, now + 1.5), WindowState("tokens", 1000, 1200, 0, now + 1.5)]
    headers = quota_headers(plan, states, 1, now)
    assert list(headers.items()) == [
        ("x-ratelimit-limit-requests", "10"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-limit-concurrent", "2"),
        ("x-ratelimit-remaining-requests", "7"),
        ("x-ratelimit-reset-requests", "1.5s"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1.5s"),
        ("x-ratelimit-remaining-concurrent", "1"),
    ]
    # Fewer states than windows (as zip pairs them): the counted headers of those only.
    assert quota_headers(plan, states[:1], 0, now) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-limit-concurrent": "2",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "1.5s",
        "x-ratelimit-remaining-concurrent": "2",
    }


# Quotas.from_dict: what a tenant's JSON may say.

NAMES = ["rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens"]


@given(st.dictionaries(st.sampled_from(NAMES), st.none() | st.integers(min_value=1, max_value=2**62)))
def test_valid_quotas_round_trip(data: dict[str, int | None]) -> None:
    quotas = Quotas.from_dict(data)
    assert Quotas.from_dict(quotas.to_dict()) == quotas
    assert {k: v for k, v in quotas.to_dict().items() if k in data} == data
    assert list(quotas.to_dict()) == NAMES


@given(
    st.sampled_from(NAMES),
    st.integers(max_value=0) | st.booleans() | st.floats() | st.text() | st.lists(st.integers()),
)
def test_bad_quota_values_are_refused_with_the_name(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"quota {name} must be an integer >= 1 or null"):
        Quotas.from_dict({name: value})


@given(st.text(min_size=1).filter(lambda key: key not in NAMES))
def test_unknown_quota_names_are_refused_listing_the_valid_ones(key: str) -> None:
    with pytest.raises(
        ValueError, match="valid quotas: rpm, tpm, max_concurrent, daily_tokens, monthly_tokens"
    ):
        Quotas.from_dict({key: 1})
