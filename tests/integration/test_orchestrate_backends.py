"""OpenAI and Ollama backends against a real `llmkit simulate` process: answers, streams, faults, retries."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llmkit.orchestrate.backends import backend_from_settings
from llmkit.orchestrate.backends.base import Backend, CircuitOpen, JobSpec, PermanentError, RetryableError
from llmkit.orchestrate.backends.ollama import OllamaBackend
from llmkit.orchestrate.backends.openai import OpenAIBackend
from llmkit.orchestrate.backends.resilience import ResilientBackend
from tests.serve_process import ServerProcess
from tests.simulate_admin import ADMIN_HEADERS, SIMULATE_ADMIN_ENV

PROMPT = "What is the capital of Australia?"
KINDS = ["openai", "ollama"]


class Deltas(list[str]):
    """An on_delta callback that keeps what it got."""

    async def __call__(self, text: str) -> None:
        self.append(text)


class Sleeps(list[float]):
    """Records backoff waits instead of waiting (the server's schedule does not depend on time)."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `llmkit simulate` on a free port for the module; its base URL."""
    # An injected timeout hangs until the client gives up; keep it short in case one does not.
    env = {"LLMKIT_SIMULATE_FAULT_TIMEOUT_S": "30", **SIMULATE_ADMIN_ENV}
    tmp = tmp_path_factory.mktemp("simulate")
    with ServerProcess(tmp, "--port", "0", command="simulate", env=env) as server:
        yield server.wait_listening()


@pytest.fixture
async def admin(simulator: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session for /admin/faults (with the admin key); the schedule is cleared after each test."""
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        yield session
        async with session.delete(f"{simulator}/admin/faults") as resp:
            assert resp.status == 200


async def schedule(session: aiohttp.ClientSession, url: str, *steps: tuple[str, int]) -> None:
    body = {"schedule": [{"fault": fault, "count": count} for fault, count in steps]}
    async with session.post(f"{url}/admin/faults", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def injected(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """How many faults of each kind the simulator injected since it started."""
    async with session.get(f"{url}/admin/faults") as resp:
        data: dict[str, Any] = await resp.json()
    return data["injected"]


async def schedule_counted(session: aiohttp.ClientSession, url: str, fault: str, count: int) -> int:
    """Schedule `count` faults; the injected count so far, to subtract afterwards."""
    before = (await injected(session, url))[fault]
    await schedule(session, url, (fault, count))
    return before


def make(kind: str, url: str, **options: Any) -> OpenAIBackend | OllamaBackend:
    if kind == "openai":
        return OpenAIBackend(f"{url}/v1", "test-key", "gpt-4o-mini", **options)
    return OllamaBackend(url, "llama3.2", **options)


@pytest.fixture(params=KINDS)
async def inner(
    request: pytest.FixtureRequest, simulator: str
) -> AsyncIterator[OpenAIBackend | OllamaBackend]:
    backend = make(request.param, simulator)
    yield backend
    await backend.close()


def resilient(inner: Backend, **options: Any) -> tuple[ResilientBackend, Sleeps]:
    sleeps = Sleeps()
    options.setdefault("backoff_base", 0.01)
    return ResilientBackend(inner, sleep=sleeps, **options), sleeps


async def test_whole_answer_equals_the_streamed_deltas(inner: OpenAIBackend | OllamaBackend) -> None:
    whole = await inner.run(JobSpec(PROMPT))
    deltas = Deltas()
    streamed = await inner.run(JobSpec(PROMPT, stream=True), deltas)
    assert "Canberra" in whole
    assert len(deltas) > 5
    assert "".join(deltas) == streamed == whole


async def test_parameters_reach_the_upstream(inner: OpenAIBackend | OllamaBackend) -> None:
    # max_tokens is OpenAI's name; the Ollama backend sends it as options.num_predict.
    short = await inner.run(JobSpec(PROMPT, parameters={"max_tokens": 3}))
    whole = await inner.run(JobSpec(PROMPT))
    assert short and len(short) < len(whole) and whole.startswith(short)


async def test_job_model_overrides_the_default(simulator: str) -> None:
    backend = OpenAIBackend(f"{simulator}/v1", "", "")
    try:
        with pytest.raises(PermanentError, match="no model"):
            await backend.run(JobSpec(PROMPT))
        assert "Canberra" in await backend.run(JobSpec(PROMPT, model="gpt-4o"))
    finally:
        await backend.close()


async def test_server_errors_are_retried_until_success(
    inner: OpenAIBackend | OllamaBackend, admin: aiohttp.ClientSession, simulator: str
) -> None:
    before = await schedule_counted(admin, simulator, "500", 2)
    backend, sleeps = resilient(inner, retries=3)
    assert "Canberra" in await backend.run(JobSpec(PROMPT))
    assert len(sleeps) == 2 and backend.counters.retries == 2
    assert (await injected(admin, simulator))["500"] - before == 2


async def test_429_retry_after_is_honoured(
    inner: OpenAIBackend | OllamaBackend, admin: aiohttp.ClientSession, simulator: str
) -> None:
    await schedule(admin, simulator, ("429", 1))
    with pytest.raises(RetryableError) as limited:
        await inner.run(JobSpec(PROMPT))
    # simulate.fault_retry_after defaults to 1 s.
    assert limited.value.upstream_status == 429 and limited.value.retry_after == 1.0
    await schedule(admin, simulator, ("429", 1))
    backend, sleeps = resilient(inner, retries=2)
    assert "Canberra" in await backend.run(JobSpec(PROMPT))
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 1.01


async def test_more_failures_than_retries_raise_the_last_error(
    inner: OpenAIBackend | OllamaBackend, admin: aiohttp.ClientSession, simulator: str
) -> None:
    before = await schedule_counted(admin, simulator, "503", 5)
    backend, sleeps = resilient(inner, retries=2)
    with pytest.raises(RetryableError) as failed:
        await backend.run(JobSpec(PROMPT))
    assert failed.value.upstream_status == 503
    assert "answered 503" in str(failed.value) and "retry" in str(failed.value)
    assert len(sleeps) == 2 and backend.counters.failed == 1
    assert (await injected(admin, simulator))["503"] - before == 3


async def test_disconnects_are_retried(
    inner: OpenAIBackend | OllamaBackend, admin: aiohttp.ClientSession, simulator: str
) -> None:
    await schedule(admin, simulator, ("disconnect", 1))
    with pytest.raises(RetryableError, match="failed"):
        await inner.run(JobSpec(PROMPT))
    await schedule(admin, simulator, ("disconnect", 2))
    backend, sleeps = resilient(inner, retries=2)
    assert "Canberra" in await backend.run(JobSpec(PROMPT))
    assert len(sleeps) == 2


async def test_openai_in_stream_errors_are_retryable_and_not_retried_after_text(
    simulator: str, admin: aiohttp.ClientSession
) -> None:
    inner = make("openai", simulator)
    try:
        whole = await inner.run(JobSpec(PROMPT))
        for fault in ("500", "503"):
            await schedule(admin, simulator, (fault, 1))
            deltas = Deltas()
            with pytest.raises(RetryableError, match="error in the stream") as raised:
                await inner.run(JobSpec(PROMPT, stream=True), deltas)
            assert "injected fault" in str(raised.value)
            # Half of the answer came before the error event.
            assert deltas and whole.startswith("".join(deltas)) and len("".join(deltas)) < len(whole)
        await schedule(admin, simulator, ("500", 1))
        backend, sleeps = resilient(inner, retries=3)
        deltas = Deltas()
        with pytest.raises(RetryableError):
            await backend.run(JobSpec(PROMPT, stream=True), deltas)
        # The caller has already seen half an answer: no second answer is spliced onto it.
        assert sleeps == [] and backend.counters.failed == 1
    finally:
        await inner.close()


async def test_openai_stream_cut_midway_is_retryable(simulator: str, admin: aiohttp.ClientSession) -> None:
    inner = make("openai", simulator)
    try:
        await schedule(admin, simulator, ("disconnect", 1))
        deltas = Deltas()
        with pytest.raises(RetryableError):
            await inner.run(JobSpec(PROMPT, stream=True), deltas)
        # The same backend (and its session) serves the next stream whole.
        whole = await inner.run(JobSpec(PROMPT, stream=True))
        assert deltas and whole.startswith("".join(deltas)) and len("".join(deltas)) < len(whole)
    finally:
        await inner.close()


async def test_an_attempt_that_times_out_is_retryable(simulator: str, admin: aiohttp.ClientSession) -> None:
    inner = make("openai", simulator, timeout=0.3)
    try:
        await schedule(admin, simulator, ("timeout", 1))
        with pytest.raises(RetryableError, match="no answer within 0.3 s") as raised:
            await inner.run(JobSpec(PROMPT))
        assert raised.value.status == 504
        await schedule(admin, simulator, ("timeout", 1))
        backend, sleeps = resilient(inner, retries=1)
        assert "Canberra" in await backend.run(JobSpec(PROMPT))
        assert len(sleeps) == 1
    finally:
        await inner.close()


@pytest.mark.parametrize(
    ("kind", "parameters", "message"),
    [
        ("openai", {"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ("ollama", {"max_tokens": "many"}, "options.num_predict must be an integer"),
    ],
)
async def test_bad_requests_are_permanent_and_not_retried(
    simulator: str, kind: str, parameters: dict[str, Any], message: str
) -> None:
    backend, sleeps = resilient(make(kind, simulator), retries=3, breaker_threshold=1)
    try:
        for _ in range(2):
            with pytest.raises(PermanentError, match="answered 400") as raised:
                await backend.run(JobSpec(PROMPT, parameters=parameters))
            assert message in str(raised.value) and raised.value.upstream_status == 400
        assert sleeps == [] and backend.state == "closed" and backend.counters.permanent == 2
    finally:
        await backend.close()


async def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = make("ollama", f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RetryableError, match=f"127.0.0.1:{port}"):
            await backend.run(JobSpec(PROMPT))
    finally:
        await backend.close()


async def test_the_breaker_stops_calls_to_a_failing_server(
    inner: OpenAIBackend | OllamaBackend, admin: aiohttp.ClientSession, simulator: str
) -> None:
    before = await schedule_counted(admin, simulator, "500", 10)
    backend, _ = resilient(inner, retries=1, breaker_threshold=2, breaker_reset_s=60)
    for _ in range(2):
        with pytest.raises(RetryableError):
            await backend.run(JobSpec(PROMPT))
    with pytest.raises(CircuitOpen) as refused:
        await backend.run(JobSpec(PROMPT))
    assert 59 < refused.value.retry_after <= 60
    assert backend.stats()["state"] == "open"
    # Two calls of two attempts reached the server; the third never left.
    assert (await injected(admin, simulator))["500"] - before == 4


async def test_sessions_made_are_closed_and_sessions_handed_in_are_not(simulator: str) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    owned = make("openai", simulator, session_factory=factory)
    await owned.run(JobSpec(PROMPT))
    await owned.run(JobSpec(PROMPT, stream=True))
    await owned.close()
    assert len(made) == 1 and made[0].closed
    async with aiohttp.ClientSession() as session:
        borrowed = make("ollama", simulator, session=session)
        assert "Canberra" in await borrowed.run(JobSpec(PROMPT))
        await borrowed.close()
        assert not session.closed


async def test_backend_from_settings_runs_against_the_simulator(simulator: str) -> None:
    for name, url in (("openai", f"{simulator}/v1"), ("ollama", simulator)):
        backend = backend_from_settings(name, base_url=url, api_key="k", model="m", delay_s=0, timeout=10)
        try:
            assert "Canberra" in await backend.run(JobSpec(PROMPT, stream=True), Deltas())
        finally:
            await backend.close()


# --- answers the simulator never gives: a small loopback server scripted per path ---

SCRIPTED: dict[str, tuple[int, str, bytes]] = {
    "/cut/v1/chat/completions": (
        200,
        "text/event-stream",
        b'data: {"choices":[{"delta":{"content":"Hal"}}]}\n\n',
    ),
    "/html/v1/chat/completions": (200, "text/html", b"<html>proxy login</html>"),
    "/shape/v1/chat/completions": (200, "application/json", b'{"id": "x", "choices": []}'),
    "/bad-request/v1/chat/completions": (
        200,
        "text/event-stream",
        b'data: {"error": {"message": "too long", "type": "invalid_request_error", '
        b'"code": "context_length_exceeded"}}\n\n',
    ),
    "/cut/api/chat": (200, "application/x-ndjson", b'{"message": {"content": "Hal"}, "done": false}\n'),
    "/crash/api/chat": (200, "application/x-ndjson", b'{"error": "llama runner process has terminated"}\n'),
    "/gone/api/chat": (
        404,
        "application/json",
        b'{"error": "model \\"nope\\" not found, try pulling it first"}',
    ),
}


@pytest.fixture
async def scripted(aiohttp_server: Any) -> str:
    """A loopback server answering each path of SCRIPTED with its status, content type and body."""

    async def answer(request: web.Request) -> web.Response:
        status, content_type, body = SCRIPTED[request.path]
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("kind", "path", "stream", "error", "message"),
    [
        ("openai", "/cut", True, RetryableError, "ended before \\[DONE\\]"),
        ("openai", "/html", False, PermanentError, "not JSON: '<html>proxy login</html>'"),
        ("openai", "/shape", False, PermanentError, "no choices\\[0\\].message"),
        ("openai", "/bad-request", True, PermanentError, "context_length_exceeded.*too long"),
        ("ollama", "/cut", True, RetryableError, "ended before done"),
        ("ollama", "/crash", True, RetryableError, "llama runner process has terminated"),
        ("ollama", "/gone", False, PermanentError, 'answered 404: model "nope" not found'),
    ],
)
async def test_broken_answers_are_mapped(
    scripted: str, kind: str, path: str, stream: bool, error: type[Exception], message: str
) -> None:
    # make() adds /v1 to an OpenAI base URL.
    backend = make(kind, scripted + path)
    try:
        with pytest.raises(error, match=message):
            await backend.run(JobSpec(PROMPT, stream=stream), Deltas())
    finally:
        await backend.close()
