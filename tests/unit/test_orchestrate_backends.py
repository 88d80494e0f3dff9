"""Orchestrate backends without a network: echo, error mapping, the resilience layer, the name table."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.upstream import in_stream_error, retry_after, status_error, upstream_message
from llmkit.errors import ConfigError
from llmkit.orchestrate.backends import backend_from_settings
from llmkit.orchestrate.backends.base import CircuitOpen, JobSpec, PermanentError, RetryableError
from llmkit.orchestrate.backends.echo import EchoBackend, pieces
from llmkit.orchestrate.backends.ollama import OllamaBackend, ollama_fields
from llmkit.orchestrate.backends.openai import OpenAIBackend
from llmkit.orchestrate.backends.resilience import TRIAL_WAIT_S, ResilientBackend


class Deltas(list[str]):
    """An on_delta callback that keeps what it got."""

    async def __call__(self, text: str) -> None:
        self.append(text)


# --- echo ---


async def test_echo_returns_the_prompt_without_streaming() -> None:
    backend = EchoBackend()
    deltas = Deltas()
    assert await backend.run(JobSpec("hello  wide world ")) == "hello  wide world "
    # Not a streamed job: on_delta is not called even when given.
    assert await backend.run(JobSpec("hello world"), deltas) == "hello world"
    assert deltas == []
    # A streamed job without a callback still answers.
    assert await backend.run(JobSpec("hello world", stream=True)) == "hello world"
    await backend.close()


async def test_echo_streams_word_pieces_that_join_to_the_prompt() -> None:
    deltas = Deltas()
    text = await EchoBackend().run(JobSpec("  The quick\tbrown fox \n", stream=True), deltas)
    assert text == "  The quick\tbrown fox \n"
    assert deltas == ["  The ", "quick\t", "brown ", "fox \n"]
    grouped = Deltas()
    await EchoBackend(tokens_per_delta=3).run(JobSpec("a b c d e", stream=True), grouped)
    assert grouped == ["a b c ", "d e"]


@given(st.text(), st.integers(min_value=1, max_value=5))
def test_pieces_always_join_back(text: str, size: int) -> None:
    parts = pieces(text, size)
    assert "".join(parts) == text
    assert all(parts)


async def test_echo_delay_is_per_piece_streamed_or_not() -> None:
    backend = EchoBackend(delay_s=0.02)
    started = time.perf_counter()
    deltas = Deltas()
    await backend.run(JobSpec("one two three", stream=True), deltas)
    streamed = time.perf_counter() - started
    started = time.perf_counter()
    await backend.run(JobSpec("one two three"))
    whole = time.perf_counter() - started
    assert deltas == ["one ", "two ", "three"]
    assert 0.06 <= streamed < 1.0
    assert 0.06 <= whole < 1.0


async def test_echo_without_delay_is_cheap() -> None:
    backend = EchoBackend()
    job = JobSpec("What is the capital of France?")
    started = time.perf_counter()
    for _ in range(20_000):
        await backend.run(job)
    # Far below the budget of the whole server path (> 10,000 jobs/s).
    assert time.perf_counter() - started < 0.5


def test_echo_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="delay_s"):
        EchoBackend(delay_s=-1)
    with pytest.raises(ConfigError, match="tokens_per_delta"):
        EchoBackend(tokens_per_delta=0)


# --- error mapping ---


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"Retry-After": "0.5"}) == 0.5
    assert retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after({}) is None
    assert retry_after({"Retry-After": "soon"}) is None
    in_ten = retry_after({"Retry-After": formatdate(time.time() + 10, usegmt=True)})
    assert in_ten is not None and 8 <= in_ten <= 10
    assert retry_after({"Retry-After": formatdate(time.time() - 60, usegmt=True)}) == 0.0


def test_upstream_message_reads_both_error_shapes() -> None:
    assert (
        upstream_message(b'{"error": {"message": "bad key", "type": "invalid_request_error"}}') == "bad key"
    )
    assert upstream_message(b'{"error": "model not found"}') == "model not found"
    assert upstream_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert upstream_message(b"") == "(empty body)"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    error = status_error("openai", "http://x/v1/chat/completions", status, {"Retry-After": "3"}, b"{}")
    assert isinstance(error, RetryableError)
    assert error.upstream_status == status and error.retry_after == 3.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_permanent_with_the_upstream_message(status: int) -> None:
    body = b'{"error": {"message": "max_tokens must be an integer >= 1; got 0"}}'
    error = status_error("openai", "http://x/v1/chat/completions", status, {}, body)
    assert isinstance(error, PermanentError)
    assert error.upstream_status == status
    assert f"answered {status}: max_tokens must be an integer >= 1; got 0" in str(error)


def test_in_stream_errors_by_type_and_code() -> None:
    assert isinstance(in_stream_error("openai", {"type": "server_error", "message": "m"}), RetryableError)
    assert isinstance(in_stream_error("openai", {"code": "rate_limit_exceeded"}), RetryableError)
    assert isinstance(in_stream_error("openai", {"code": 503, "message": "busy"}), RetryableError)
    bad = in_stream_error("openai", {"type": "invalid_request_error", "code": "context_length_exceeded"})
    assert isinstance(bad, PermanentError) and "context_length_exceeded" in str(bad)
    # Ollama's bare string: the server accepted the request, so it failed on its side.
    assert isinstance(in_stream_error("ollama", "runner crashed"), RetryableError)


def test_ollama_fields_map_openai_names_into_options() -> None:
    fields = ollama_fields({"temperature": 0.2, "max_tokens": 8, "format": "json", "options": {"seed": 1}})
    assert fields == {"format": "json", "options": {"temperature": 0.2, "num_predict": 8, "seed": 1}}
    assert ollama_fields({}) == {}


def test_request_bodies_keep_their_essentials() -> None:
    openai = OpenAIBackend("http://127.0.0.1:1/v1/", "k", "default-model")
    body = openai.body(JobSpec("hi", parameters={"temperature": 0, "stream": True, "model": "x"}))
    assert openai.url == "http://127.0.0.1:1/v1/chat/completions"
    assert body == {
        "temperature": 0,
        "model": "default-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }
    assert openai.body(JobSpec("hi", model="m2"))["model"] == "m2"
    ollama = OllamaBackend("http://127.0.0.1:1", "")
    with pytest.raises(PermanentError, match="orchestrate.model"):
        ollama.body(JobSpec("hi"))
    assert ollama.body(JobSpec("hi", model="llama3.2", stream=True))["stream"] is True


# --- resilience ---


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSleep(list[float]):
    """Records the waits instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class MaxRng(random.Random):
    """random() at the top of its range: the jitter's upper bound."""

    def random(self) -> float:
        return 0.999999


class ScriptedBackend:
    """Answers from a script: an exception is raised, a string is returned; the last entry repeats."""

    name = "scripted"

    def __init__(self, script: Iterable[str | BaseException]) -> None:
        self.script = list(script)
        self.calls = 0
        self.closed = False

    async def run(self, job: JobSpec, on_delta: Any = None) -> str:
        outcome = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        self.closed = True


def retryable(retry_after: float | None = None) -> RetryableError:
    return RetryableError("upstream 503", retry_after=retry_after, upstream_status=503)


def resilient(
    inner: Any, clock: FakeClock | None = None, **options: Any
) -> tuple[ResilientBackend, FakeSleep]:
    sleep = FakeSleep()
    options.setdefault("rng", random.Random(7))
    backend = ResilientBackend(inner, clock=clock or FakeClock(), sleep=sleep, **options)
    return backend, sleep


JOB = JobSpec("prompt", "model")


async def test_retries_until_success() -> None:
    inner = ScriptedBackend([retryable(), retryable(), "answer"])
    backend, sleep = resilient(inner, retries=3)
    assert await backend.run(JOB) == "answer"
    assert inner.calls == 3 and len(sleep) == 2
    stats = backend.stats()
    assert stats["succeeded"] == 1 and stats["retries"] == 2 and stats["failed"] == 0
    assert stats["state"] == "closed" and stats["backend"] == "scripted"


async def test_gives_up_after_retries_with_the_last_error() -> None:
    errors = [retryable(), retryable(), retryable()]
    inner = ScriptedBackend(errors)
    backend, sleep = resilient(inner, retries=2)
    with pytest.raises(RetryableError) as raised:
        await backend.run(JOB)
    assert raised.value is errors[2]
    assert inner.calls == 3 and len(sleep) == 2
    assert backend.counters.failed == 1 and backend.failures_in_row == 1


async def test_zero_retries_is_one_attempt() -> None:
    inner = ScriptedBackend([retryable()])
    backend, sleep = resilient(inner, retries=0)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert inner.calls == 1 and sleep == []


async def test_backoff_doubles_up_to_the_cap_at_the_top_of_the_jitter() -> None:
    inner = ScriptedBackend([retryable()])
    backend, sleep = resilient(inner, retries=6, backoff_base=0.1, backoff_cap=1.0, rng=MaxRng())
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert sleep == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-4)


def test_full_jitter_stays_within_zero_and_the_exponential_bound() -> None:
    backend = ResilientBackend(
        ScriptedBackend(["x"]), backoff_base=0.2, backoff_cap=5.0, rng=random.Random(1)
    )
    for attempt in range(8):
        bound = min(5.0, 0.2 * 2**attempt)
        delays = [backend.delay(attempt, None) for _ in range(500)]
        assert all(0 <= d <= bound for d in delays)
        # Full jitter spreads over the whole range, not just near the bound.
        assert min(delays) < bound * 0.1 and max(delays) > bound * 0.9
    # Far past any sane attempt count the bound stays the cap (no float overflow).
    assert 0 <= backend.delay(5000, None) <= 5.0


async def test_retry_after_is_honoured_with_a_little_jitter_and_capped() -> None:
    inner = ScriptedBackend([retryable(retry_after=1.5), retryable(retry_after=60), "ok"])
    backend, sleep = resilient(inner, retries=3, backoff_base=0.2, backoff_cap=5.0)
    assert await backend.run(JOB) == "ok"
    assert 1.5 <= sleep[0] <= 1.7
    assert sleep[1] == 5.0


async def test_permanent_errors_are_not_retried_and_never_open_the_breaker() -> None:
    inner = ScriptedBackend([PermanentError("400: bad max_tokens")])
    backend, sleep = resilient(inner, retries=3, breaker_threshold=2)
    for _ in range(5):
        with pytest.raises(PermanentError):
            await backend.run(JOB)
    assert inner.calls == 5 and sleep == []
    assert backend.state == "closed" and backend.failures_in_row == 0
    assert backend.counters.permanent == 5


async def test_breaker_opens_after_threshold_failed_calls_and_refuses_at_once() -> None:
    clock = FakeClock()
    inner = ScriptedBackend([retryable()])
    backend, _ = resilient(inner, clock, retries=1, breaker_threshold=3, breaker_reset_s=30)
    for _ in range(2):
        with pytest.raises(RetryableError):
            await backend.run(JOB)
    assert backend.state == "closed"
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert backend.state == "open" and inner.calls == 6
    clock.now += 10
    with pytest.raises(CircuitOpen) as refused:
        await backend.run(JOB)
    assert refused.value.retry_after == pytest.approx(20)
    assert refused.value.status == 503 and "3 failed calls in a row" in str(refused.value)
    assert inner.calls == 6
    assert backend.stats()["rejected"] == 1 and backend.stats()["opened"] == 1


async def test_a_success_resets_the_failures_in_row() -> None:
    inner = ScriptedBackend([retryable(), "ok", retryable(), retryable()])
    backend, _ = resilient(inner, retries=0, breaker_threshold=2)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert await backend.run(JOB) == "ok"
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert backend.state == "closed" and backend.failures_in_row == 1


async def test_half_open_trial_failure_reopens_and_success_closes() -> None:
    clock = FakeClock()
    inner = ScriptedBackend([retryable()])
    backend, sleep = resilient(inner, clock, retries=3, breaker_threshold=1, breaker_reset_s=30)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert inner.calls == 4 and len(sleep) == 3
    inner.script, inner.calls = [retryable(), "recovered"], 0
    clock.now += 30
    assert backend.state == "half_open"
    # The trial is one attempt, no retries: it fails and the breaker opens again for a full period.
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert inner.calls == 1 and len(sleep) == 3
    assert backend.state == "open" and backend.counters.opened == 2
    with pytest.raises(CircuitOpen) as refused:
        await backend.run(JOB)
    assert refused.value.retry_after == pytest.approx(30)
    clock.now += 30
    assert await backend.run(JOB) == "recovered"
    assert backend.state == "closed" and backend.failures_in_row == 0


async def test_only_one_trial_runs_while_half_open() -> None:
    clock = FakeClock()
    release = asyncio.Event()

    class SlowBackend(ScriptedBackend):
        async def run(self, job: JobSpec, on_delta: Any = None) -> str:
            self.calls += 1
            if self.calls == 1:
                raise retryable()
            await release.wait()
            return "fine"

    inner = SlowBackend([])
    backend, _ = resilient(inner, clock, retries=0, breaker_threshold=1, breaker_reset_s=5)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    clock.now += 5
    trial = asyncio.create_task(backend.run(JOB))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen, match="trial") as refused:
        await backend.run(JOB)
    assert refused.value.retry_after == TRIAL_WAIT_S
    release.set()
    assert await trial == "fine"
    assert backend.state == "closed"
    assert await backend.run(JOB) == "fine"


async def test_an_unexpected_error_in_the_trial_frees_the_next_trial() -> None:
    clock = FakeClock()
    inner = ScriptedBackend([retryable()])
    backend, _ = resilient(inner, clock, retries=0, breaker_threshold=1, breaker_reset_s=5)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    clock.now += 5
    inner.script = [ValueError("bug"), "ok"]
    inner.calls = 0
    with pytest.raises(ValueError):
        await backend.run(JOB)
    assert backend.state == "half_open"
    assert await backend.run(JOB) == "ok"
    assert backend.state == "closed"


async def test_a_cancelled_call_counts_as_a_failure() -> None:
    class HangingBackend(ScriptedBackend):
        async def run(self, job: JobSpec, on_delta: Any = None) -> str:
            self.calls += 1
            await asyncio.sleep(3600)
            return "never"

    backend, _ = resilient(HangingBackend([]), retries=3, breaker_threshold=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await backend.run(JOB)
    assert backend.state == "open" and backend.counters.cancelled == 1


async def test_a_stream_that_passed_text_on_is_not_retried() -> None:
    class HalfStream(ScriptedBackend):
        async def run(self, job: JobSpec, on_delta: Any = None) -> str:
            self.calls += 1
            if self.calls == 1 and on_delta is not None:
                await on_delta("The capital ")
            if self.calls <= 2:
                raise retryable()
            return "The capital is Canberra."

    deltas = Deltas()
    inner = HalfStream([])
    backend, _ = resilient(inner, retries=3)
    with pytest.raises(RetryableError):
        await backend.run(JobSpec("q", "m", stream=True), deltas)
    assert inner.calls == 1 and deltas == ["The capital "]
    # A failure before any text is retried as usual.
    assert await backend.run(JobSpec("q", "m", stream=True), deltas) == "The capital is Canberra."
    assert inner.calls == 3


async def test_calls_waiting_to_retry_stop_when_the_breaker_opens() -> None:
    gate = asyncio.Event()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            await gate.wait()

    inner = ScriptedBackend([retryable()])
    backend = ResilientBackend(inner, retries=1, breaker_threshold=1, clock=FakeClock(), sleep=sleep)
    waiting = asyncio.create_task(backend.run(JOB))
    await asyncio.sleep(0)
    with pytest.raises(RetryableError):
        await backend.run(JOB)
    assert backend.state == "open"
    gate.set()
    with pytest.raises(CircuitOpen):
        await waiting
    # The waiting call gave up without a second attempt.
    assert inner.calls == 3 and backend.counters.rejected == 1


async def test_threshold_zero_never_opens() -> None:
    inner = ScriptedBackend([retryable()])
    backend, _ = resilient(inner, retries=0, breaker_threshold=0)
    for _ in range(20):
        with pytest.raises(RetryableError):
            await backend.run(JOB)
    assert backend.state == "closed" and inner.calls == 20


async def test_close_closes_the_inner_backend_and_options_are_checked() -> None:
    inner = ScriptedBackend(["x"])
    backend = ResilientBackend(inner)
    assert backend.name == "scripted"
    await backend.close()
    assert inner.closed
    with pytest.raises(ConfigError, match="retries"):
        ResilientBackend(inner, retries=-1)


# --- backend_from_settings ---


async def test_backend_from_settings_builds_each_known_backend() -> None:
    echo = backend_from_settings("echo", delay_s=0.25)
    assert isinstance(echo, EchoBackend) and echo.delay_s == 0.25
    openai = backend_from_settings(
        "openai", base_url="http://127.0.0.1:4545/v1", api_key="k", model="gpt-4o-mini", retries=5
    )
    assert isinstance(openai, ResilientBackend) and openai.retries == 5 and openai.name == "openai"
    assert isinstance(openai.inner, OpenAIBackend)
    assert openai.inner.url == "http://127.0.0.1:4545/v1/chat/completions"
    assert openai.inner.default_model == "gpt-4o-mini"
    ollama = backend_from_settings("ollama", base_url="http://127.0.0.1:11434", model="llama3.2", timeout=9)
    assert isinstance(ollama, ResilientBackend) and isinstance(ollama.inner, OllamaBackend)
    assert ollama.inner.url == "http://127.0.0.1:11434/api/chat" and ollama.inner.http.timeout == 9
    for made in (echo, openai, ollama):
        await made.close()


def test_backend_from_settings_rejects_unknown_names_and_missing_urls() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'vllm'; known backends: echo, openai, ollama"):
        backend_from_settings("vllm")
    with pytest.raises(ConfigError, match="orchestrate.backend_url"):
        backend_from_settings("openai", base_url="")
