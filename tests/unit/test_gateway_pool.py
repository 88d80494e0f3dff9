"""UpstreamPool over scripted upstreams: weights, failover, retries, breakers, streams, cancellation."""

from __future__ import annotations

import asyncio
import random

import pytest

from llmkit.core.breaker import CircuitBreaker
from llmkit.errors import CircuitOpen, ConfigError, PermanentError, RetryableError, UpstreamError
from llmkit.gateway.calls import ChatCall, OnPiece, Outcome
from llmkit.gateway.pool import Member, UpstreamPool, parse_upstreams, pool_from_settings
from tests.unit.gateway_fakes import gateway_settings

CALL = ChatCall("m", [{"role": "user", "content": "hi"}], {}, False)


class Scripted:
    """An upstream that fails with the next scripted error (None: answers) and records each call."""

    kind = "test"

    def __init__(self, url: str, script: list[Exception | None] | None = None, pieces: int = 0) -> None:
        self.url = url
        self.script = list(script or [])
        self.calls = 0
        self.pieces = pieces
        self.gate: asyncio.Event | None = None
        self.closed = False

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        self.calls += 1
        if on_piece is not None:
            for n in range(self.pieces):
                on_piece(f"p{n} ")
        if self.gate is not None:
            await self.gate.wait()
        error = self.script.pop(0) if self.script else None
        if error is not None:
            raise error
        return Outcome(f"from {self.url}", call.model, "stop", None, self.url)

    async def warm(self, model: str) -> None:
        self.calls += 1

    async def check(self) -> None:
        if self.script and self.script[0] is not None:
            raise self.script[0]

    async def models(self) -> list[str]:
        if self.script and self.script[0] is not None:
            raise self.script[0]
        return [f"model-of-{self.url}", "shared"]

    async def close(self) -> None:
        self.closed = True


def boom(url: str = "u", status: int = 502) -> RetryableError:
    return RetryableError(f"test: POST {url} answered 500: boom", status=status)


def pool(
    *upstreams: tuple[Scripted, int], retries: int = 2, threshold: int = 5, reset_s: float = 30.0
) -> UpstreamPool:
    members = [Member(u, w, CircuitBreaker(u.url, threshold, reset_s)) for u, w in upstreams]
    return UpstreamPool(members, retries=retries, backoff_base=0.0, backoff_cap=0.0, rng=random.Random(1))


async def test_weights_share_the_calls_smoothly() -> None:
    a, b = Scripted("a"), Scripted("b")
    p = pool((a, 3), (b, 1))
    chosen = [(await p.chat(CALL, None)).upstream for _ in range(8)]
    assert chosen == ["a", "a", "b", "a", "a", "a", "b", "a"]
    assert (a.calls, b.calls) == (6, 2)


async def test_a_failure_fails_over_to_the_next_upstream_at_once() -> None:
    a, b = Scripted("a", [boom("a")]), Scripted("b")
    p = pool((a, 10), (b, 1), retries=1)
    assert (await p.chat(CALL, None)).upstream == "b"
    assert (a.calls, b.calls, p.failovers, p.retried) == (1, 1, 1, 1)
    assert [row["failed"] for row in p.stats()] == [1, 0]


async def test_retries_on_the_one_upstream_then_gives_up_saying_how_often() -> None:
    a = Scripted("http://a", [boom("http://a")] * 5)
    p = pool((a, 1), retries=2)
    with pytest.raises(UpstreamError) as err:
        await p.chat(CALL, None)
    assert a.calls == 3 and err.value.status == 502
    assert "http://a" in str(err.value) and "gave up after 3 attempts" in str(err.value)
    assert "gateway.retries=2" in str(err.value)


async def test_a_timeout_keeps_its_504() -> None:
    a = Scripted("a", [boom("a", status=504)])
    with pytest.raises(UpstreamError) as err:
        await pool((a, 1), retries=0).chat(CALL, None)
    assert err.value.status == 504


async def test_permanent_errors_are_not_retried_and_do_not_trip_the_breaker() -> None:
    a = Scripted("a", [PermanentError("test: 400 bad model")] * 3)
    p = pool((a, 1), retries=2, threshold=1)
    for _ in range(3):
        with pytest.raises(PermanentError):
            await p.chat(CALL, None)
    assert a.calls == 3
    assert p.stats()[0]["breaker"] == "closed" and p.stats()[0]["permanent"] == 3


async def test_open_breaker_skips_the_upstream_and_all_open_refuses_without_calling() -> None:
    a, b = Scripted("a", [boom("a")] * 2), Scripted("b", [boom("b")] * 2)
    p = pool((a, 1), (b, 1), retries=0, threshold=2, reset_s=60)
    for _ in range(4):
        with pytest.raises(UpstreamError):
            await p.chat(CALL, None)
    assert [row["breaker"] for row in p.stats()] == ["open", "open"]
    calls = a.calls + b.calls
    with pytest.raises(CircuitOpen) as err:
        await p.chat(CALL, None)
    assert a.calls + b.calls == calls
    assert err.value.status == 503 and 59 < err.value.retry_after <= 60
    assert "a: circuit open after 2 failed calls in a row; retry in" in str(err.value)
    assert "b: circuit open" in str(err.value) and "gateway.breaker_threshold" in str(err.value)


async def test_half_open_trial_closes_the_breaker_again() -> None:
    now = [0.0]
    a = Scripted("a", [boom("a")])
    breaker = CircuitBreaker("a", 1, 10, clock=lambda: now[0])
    p = UpstreamPool([Member(a, 1, breaker)], retries=0, backoff_base=0, backoff_cap=0)
    with pytest.raises(UpstreamError):
        await p.chat(CALL, None)
    with pytest.raises(CircuitOpen):
        await p.chat(CALL, None)
    now[0] = 11.0
    assert (await p.chat(CALL, None)).upstream == "a"
    assert p.stats()[0]["breaker"] == "closed"


async def test_a_stream_that_started_is_not_retried() -> None:
    a = Scripted("a", [boom("a"), None], pieces=2)
    seen: list[str] = []
    with pytest.raises(UpstreamError) as err:
        await pool((a, 1), retries=3).chat(ChatCall("m", [], {}, True), seen.append)
    assert a.calls == 1 and seen == ["p0 ", "p1 "]
    assert "the streamed answer had started" in str(err.value)


async def test_a_cancelled_call_is_no_failure_of_the_upstream() -> None:
    a = Scripted("a")
    a.gate = asyncio.Event()
    p = pool((a, 1), threshold=1)
    task = asyncio.create_task(p.chat(CALL, None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = p.stats()[0]
    assert row["breaker"] == "closed" and row["cancelled"] == 1 and row["failed"] == 0


async def test_check_models_warm_and_close() -> None:
    a, b = Scripted("a"), Scripted("b", [boom("b")])
    p = pool((a, 1), (b, 1))
    rows = await p.check()
    assert [(r["url"], r["ok"]) for r in rows] == [("a", True), ("b", False)]
    assert "boom" in rows[1]["error"] and rows[0]["latency_ms"] >= 0
    assert await p.models() == ["model-of-a", "shared"]
    warmed = await p.warm("llama3")
    assert warmed["model"] == "llama3" and warmed["upstream"] in ("a", "b") and warmed["load_ms"] >= 0
    await p.close()
    assert a.closed and b.closed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://a:11434", [("http://a:11434", 1)]),
        (" http://a:1/v1/*3 , https://b ", [("http://a:1/v1", 3), ("https://b", 1)]),
    ],
)
def test_parse_upstreams(text: str, expected: list[tuple[str, int]]) -> None:
    assert parse_upstreams(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("a:11434", "not an http(s) URL"),
        ("http://a*0", "whole number >= 1"),
        ("http://a*x", "'x'"),
    ],
)
def test_bad_upstreams_name_the_setting(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_upstreams(text)
    assert "gateway.upstreams" in str(err.value) and says in str(err.value)


def test_pool_from_settings_builds_the_kind_with_weights_and_timeouts() -> None:
    settings = gateway_settings(
        upstreams="http://a:1/v1*2,http://b:2/v1", upstream_kind="openai", first_byte_timeout_s=7, retries=4
    )
    p = pool_from_settings(settings.gateway)
    assert [(m.upstream.url, m.upstream.kind, m.weight) for m in p.members] == [
        ("http://a:1/v1", "openai", 2),
        ("http://b:2/v1", "openai", 1),
    ]
    assert p.retries == 4
    assert p.members[0].upstream.http.timeouts.first_byte == 7  # type: ignore[attr-defined]


def test_the_watcher_hears_an_open_and_a_recovery_but_not_a_failed_trial() -> None:
    now = [0.0]
    heard: list[tuple[str, str]] = []
    breaker = CircuitBreaker("http://a", 2, 10, clock=lambda: now[0])
    p = UpstreamPool([Member(Scripted("http://a", []), 1, breaker)])
    p.watch_circuits(lambda name, state: heard.append((name, state)))
    breaker.failed(False)
    assert heard == []
    breaker.failed(False)
    assert heard == [("http://a", "open")]
    now[0] = 11
    breaker.failed(breaker.admit())  # the trial fails: open again, no news
    now[0] = 22
    breaker.answered(breaker.admit())
    breaker.failed(False)  # one failure of a closed breaker under the threshold
    assert heard == [("http://a", "open"), ("http://a", "closed")]
