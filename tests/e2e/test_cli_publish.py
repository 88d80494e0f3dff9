"""`llmkit publish` as a user runs it, against an in-test fake aggregator with faults and the real one."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.serve_process import LLMKIT, ServerProcess
from tests.servers import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class FakeAggregator:
    """The aggregator's contract in a dict of (topic, event_id), with faults for the first requests.

    Faults: "429" (Retry-After: 0), "503", "drop" (close the connection, store nothing), "commit-drop"
    (store, then close the connection), "slow" (store after `slow_s`, answer late), "422".
    """

    def __init__(
        self,
        faults: list[str] | None = None,
        always: str | None = None,
        lie: int = 0,
        queued: bool = False,
        stats: bool = True,
        slow_s: float = 1.0,
    ) -> None:
        self.faults = list(faults or [])
        self.always = always
        self.lie = lie
        self.queued = queued
        self.stats_enabled = stats
        self.slow_s = slow_s
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        self.received = 0
        self.requests = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/publish", self.publish)
        if self.stats_enabled:
            app.router.add_get("/stats", self.stats)
        return app

    def commit(self, events: list[dict[str, Any]]) -> int:
        new = 0
        for event in events:
            self.received += 1
            key = (event["topic"], event["event_id"])
            if key not in self.seen:
                self.seen[key] = event
                new += 1
        return new

    async def _later(self, events: list[dict[str, Any]], delay: float) -> None:
        await asyncio.sleep(delay)
        self.commit(events)

    async def publish(self, request: web.Request) -> web.Response:
        self.requests += 1
        fault = self.faults.pop(0) if self.faults else self.always
        events = orjson.loads(await request.read())["events"]
        error: dict[str, Any] = {"error": {"code": "fake", "message": f"fake {fault}"}}
        if fault == "429":
            return web.json_response(error, status=429, headers={"Retry-After": "0"})
        if fault == "503":
            return web.json_response(error, status=503)
        if fault == "422":
            detail = [{"type": "missing", "loc": ["body", "events", 0, "topic"], "msg": "Field required"}]
            return web.json_response({"detail": detail}, status=422)
        if fault == "drop":
            return self._drop(request)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if self.queued:
            task = asyncio.create_task(self._later(events, 0.3))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return web.json_response({"status": "queued", "events_count": len(events)}, status=202)
        new = self.commit(events)
        if fault == "commit-drop":
            return self._drop(request)
        count = len(events)
        answer = {"status": "success", "message": f"{count} events received", "events_count": count}
        return web.json_response({**answer, "accepted": new, "duplicates": count - new})

    def _drop(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def stats(self, request: web.Request) -> web.Response:
        # The lie starts with the first event, so it shows in the run's deltas.
        unique = len(self.seen) + (self.lie if self.seen else 0)
        topics = sorted({topic for topic, _ in self.seen})
        body = {"received": self.received, "unique_processed": unique, "topics": topics, "uptime": 1}
        return web.json_response({**body, "duplicated_dropped": self.received - len(self.seen)})


async def run_publish(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the real console script; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        LLMKIT,
        "publish",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def serve(aiohttp_server: ServerFactory, fake: FakeAggregator) -> str:
    server = await aiohttp_server(fake.app())
    return f"http://127.0.0.1:{server.port}"


async def test_a_clean_run_verifies_exact_numbers(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator()
    url = await serve(aiohttp_server, fake)
    args = ("--url", url, "--count", "1000", "--duplicates", "0.2", "--topics", "3", "--batch-size", "100")
    code, out, err = await run_publish(*args, "--concurrency", "4", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["events"] == result["sent"] == result["acknowledged"] == 1000
    assert (result["duplicates_sent"], result["distinct_sent"], result["batches"]) == (200, 800, 10)
    assert (result["failed"], result["retries"], result["unknown_outcome_events"]) == (0, 0, 0)
    assert result["attempts"] == {"200": 10}
    assert result["server"] == {"accepted": 800, "duplicates": 200}
    assert result["stats"]["before"] == {"received": 0, "unique_processed": 0, "duplicated_dropped": 0}
    assert result["stats"]["delta"] == {"received": 1000, "unique_processed": 800, "duplicated_dropped": 200}
    assert result["verify"] == {"ok": True, "problems": []}
    assert result["topics"] == ["topic-1", "topic-2", "topic-3"]
    assert len(fake.seen) == 800 and fake.received == 1000 and fake.requests == 10
    assert {topic for topic, _ in fake.seen} == {"topic-1", "topic-2", "topic-3"}
    event = next(iter(fake.seen.values()))
    assert set(event) == {"event_id", "topic", "source", "payload", "timestamp"}
    assert set(event["payload"]) >= {"message", "timestamp"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
    assert result["events_per_s"] > 0


async def test_429_503_and_dropped_connections_are_retried(aiohttp_server: ServerFactory) -> None:
    # One worker, so the faults hit the first four attempts in order; "commit-drop" stores the batch and
    # loses the answer: its retry counts as 100 more duplicates on the server.
    fake = FakeAggregator(faults=["429", "503", "drop", "commit-drop"])
    url = await serve(aiohttp_server, fake)
    args = ("--url", url, "--count", "500", "--batch-size", "100", "--concurrency", "1", "--seed", "1")
    code, out, err = await run_publish(*args, "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["acknowledged"] == 500 and result["failed"] == 0
    assert result["retries"] == 4
    assert result["attempts"] == {"200": 5, "429": 1, "503": 1, "disconnected": 2}
    assert result["unknown_outcome_events"] == 300  # 503, drop, commit-drop; a 429 stored nothing
    assert result["stats"]["delta"] == {"received": 600, "unique_processed": 400, "duplicated_dropped": 200}
    assert result["verify"]["ok"] is True
    assert len(fake.seen) == 400


async def test_a_timeout_is_retried(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator(faults=["slow"], slow_s=1.0)
    url = await serve(aiohttp_server, fake)
    args = ("--url", url, "--count", "200", "--batch-size", "100", "--concurrency", "1", "--timeout", "0.3")
    code, out, err = await run_publish(*args, "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["attempts"] == {"200": 2, "timeout": 1}
    assert result["unknown_outcome_events"] == 100 and result["acknowledged"] == 200
    assert result["verify"]["ok"] is True


async def test_gives_up_after_the_retries_and_exits_1(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator(always="503")
    url = await serve(aiohttp_server, fake)
    args = ("--url", url, "--count", "300", "--batch-size", "100", "--retries", "2", "--json")
    code, out, err = await run_publish(*args)
    assert code == 1
    result = json.loads(out)
    assert (result["failed"], result["failed_batches"], result["acknowledged"]) == (300, 3, 0)
    assert result["retries"] == 6 and result["attempts"] == {"503": 9}
    assert fake.requests == 9
    assert "3 of 3 batches (300 events) failed" in err
    assert f"HTTP 503 from POST {url}/publish: fake 503 (3 batches)" in err
    assert "Traceback" not in err


async def test_a_422_is_not_retried_and_its_reason_is_shown(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator(always="422")
    url = await serve(aiohttp_server, fake)
    code, _, err = await run_publish("--url", url, "--count", "50", "--batch-size", "50", "--quiet")
    assert code == 1
    assert fake.requests == 1
    assert "HTTP 422" in err and "body.events.0.topic: Field required" in err


async def test_verify_catches_a_server_that_miscounts(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator(lie=1)
    url = await serve(aiohttp_server, fake)
    code, out, err = await run_publish("--url", url, "--count", "1000", "--verify", "--json")
    assert code == 1
    problems = json.loads(out)["verify"]["problems"]
    assert problems and all(problem in err for problem in problems)
    assert "unique_processed grew by 801, expected 800: 800 distinct new events were acknowledged" in err
    assert "received grew by 1000, but unique_processed + duplicated_dropped grew by 801 + 200 = 1001" in err
    # Without --verify the same numbers are only reported.
    code, out, _ = await run_publish("--url", url, "--count", "1000", "--json")
    assert code == 0 and json.loads(out)["verify"] is None


async def test_verify_waits_for_queued_events(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator(queued=True)
    url = await serve(aiohttp_server, fake)
    code, out, err = await run_publish("--url", url, "--count", "1000", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["queued_batches"] == 2 and result["server"]["accepted"] is None
    assert result["stats"]["delta"] == {"received": 1000, "unique_processed": 800, "duplicated_dropped": 200}


async def test_a_rerun_with_the_same_seed_sends_only_duplicates(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator()
    url = await serve(aiohttp_server, fake)
    for accepted in (400, 0):
        code, out, err = await run_publish(
            "--url", url, "--count", "500", "--seed", "9", "--verify", "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["server"]["accepted"] == result["stats"]["delta"]["unique_processed"] == accepted
    assert len(fake.seen) == 400 and fake.received == 1000


async def test_without_stats_counters_verify_fails_but_publishing_works(
    aiohttp_server: ServerFactory,
) -> None:
    fake = FakeAggregator(stats=False)
    url = await serve(aiohttp_server, fake)
    code, out, err = await run_publish("--url", url, "--count", "100", "--json")
    assert code == 0, err
    assert json.loads(out)["stats"]["delta"] is None
    code, _, err = await run_publish("--url", url, "--count", "100", "--verify", "--quiet")
    assert code == 1
    assert "/stats has no received, unique_processed, duplicated_dropped counters" in err


async def test_the_rate_cap_spaces_the_batches(aiohttp_server: ServerFactory) -> None:
    url = await serve(aiohttp_server, FakeAggregator())
    args = ("--url", url, "--count", "400", "--batch-size", "100", "--rate", "1000", "--json")
    code, out, err = await run_publish(*args)
    assert code == 0, err
    # Batches leave at 0, 0.1, 0.2 and 0.3 s.
    assert json.loads(out)["elapsed_s"] >= 0.29


async def test_aggregator_host_and_port_are_the_default_target(aiohttp_server: ServerFactory) -> None:
    fake = FakeAggregator()
    server = await aiohttp_server(fake.app())
    env = {"AGGREGATOR_HOST": "127.0.0.1", "AGGREGATOR_PORT": str(server.port)}
    code, out, err = await run_publish("--count", "10", "--quiet", env=env)
    assert code == 0, err
    assert f"published 10 of 10 events (2 duplicates) to http://127.0.0.1:{server.port}" in out
    assert fake.received == 10


async def test_the_table_reports_the_run(aiohttp_server: ServerFactory) -> None:
    url = await serve(aiohttp_server, FakeAggregator())
    code, out, err = await run_publish("--url", url, "--count", "100", "--verify", env={"COLUMNS": "160"})
    assert code == 0, err
    for text in ("llmkit publish", "acknowledged", "latency p50/p95/p99", "/stats unique_processed", "+80"):
        assert text in out
    assert "verify" in out and "ok" in out


async def test_an_unreachable_server_exits_1_with_one_line() -> None:
    port = free_port()
    code, out, err = await run_publish("--url", f"127.0.0.1:{port}", "--count", "10")
    assert code == 1 and out == ""
    assert err.startswith(f"llmkit: cannot connect to 127.0.0.1:{port}: Connection refused")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--duplicates", "1"), "--duplicates must be in [0, 1)"),
        (("--duplicates", "-0.1"), "--duplicates must be in [0, 1)"),
        (("--count", "0"), "--count"),
        (("--batch-size", "0"), "--batch-size"),
    ],
)
async def test_bad_usage_exits_2(args: tuple[str, ...], message: str) -> None:
    code, _, err = await run_publish("--url", f"127.0.0.1:{free_port()}", *args)
    assert code == 2
    assert message in err


@pytest.fixture
def aggregator(tmp_path: Path) -> ServerProcess:
    return ServerProcess(
        tmp_path, "--port", "0", "--store", f"sqlite:///{tmp_path}/a.db", command="aggregate"
    )


async def test_the_real_aggregator_verifies_exactly(aggregator: ServerProcess) -> None:
    with aggregator:
        url = await asyncio.to_thread(aggregator.wait_listening)
        args = ("--url", url, "--count", "2000", "--duplicates", "0.2", "--topics", "3", "--verify", "--json")
        code, out, err = await run_publish(*args)
        assert code == 0, err
        result = json.loads(out)
        assert (result["acknowledged"], result["failed"], result["retries"]) == (2000, 0, 0)
        assert result["server"] == {"accepted": 1600, "duplicates": 400}
        delta = {"received": 2000, "unique_processed": 1600, "duplicated_dropped": 400}
        assert result["stats"]["delta"] == delta
        assert result["verify"] == {"ok": True, "problems": []}
        # A second run with fresh ids adds exactly as much; one with a seed run twice adds only duplicates.
        code, out, err = await run_publish(*args)
        assert code == 0, err
        assert json.loads(out)["stats"]["after"] == {k: 2 * v for k, v in delta.items()}
        for accepted in (800, 0):
            code, out, err = await run_publish(
                "--url", url, "--count", "1000", "--seed", "5", "--verify", "--json"
            )
            assert code == 0, err
            assert json.loads(out)["stats"]["delta"]["unique_processed"] == accepted


async def test_the_real_aggregator_with_queued_acks(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/q.db"
    with ServerProcess(
        tmp_path, "--port", "0", "--store", store, "--ack", "queued", command="aggregate"
    ) as server:
        url = await asyncio.to_thread(server.wait_listening)
        args = ("--url", url, "--count", "3000", "--topics", "2", "--batch-size", "250", "--verify", "--json")
        code, out, err = await run_publish(*args)
        assert code == 0, err
        result = json.loads(out)
        assert result["queued_batches"] == 12
        assert result["stats"]["delta"] == {
            "received": 3000,
            "unique_processed": 2400,
            "duplicated_dropped": 600,
        }
