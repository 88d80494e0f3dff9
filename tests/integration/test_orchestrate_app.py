"""llmkit.orchestrate over HTTP and WebSocket, a controllable backend: states, priorities, limits, cache."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from llmkit.core.auth import ANONYMOUS
from llmkit.core.serve import stop_requested
from llmkit.errors import BackendError
from llmkit.orchestrate.app import create_app
from llmkit.orchestrate.backends.base import JobSpec, OnDelta
from llmkit.orchestrate.jobs import Job, MemoryJobStore
from llmkit.orchestrate.service import idempotency_name
from llmkit.orchestrate.state import ORCHESTRATOR_KEY
from llmkit.settings import OrchestrateSettings, QueueSettings, ServerSettings, Settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class FakeBackend:
    """Answers `echo: PROMPT`; waits for `gate` when it is cleared; fails prompts starting with "fail"."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        self.calls.append(job.prompt)
        self.started.set()
        await self.gate.wait()
        if job.prompt.startswith("fail"):
            raise RuntimeError("the model is on fire")
        if job.prompt.startswith("hang"):
            await asyncio.sleep(60)
        if on_delta is not None:
            for word in job.prompt.split():
                await on_delta(word)
        return f"echo: {job.prompt}"

    async def close(self) -> None:
        pass


def make_settings(**orchestrate: Any) -> Settings:
    return Settings(
        server=ServerSettings(access_log=False, drain_timeout=orchestrate.pop("drain_timeout", 10.0)),
        queue=QueueSettings(capacity=orchestrate.pop("capacity", 100)),
        orchestrate=OrchestrateSettings(**orchestrate),
    )


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def start(aiohttp_client: MakeClient, backend: FakeBackend, **orchestrate: Any) -> Client:
    return await aiohttp_client(create_app(make_settings(**orchestrate), backend))


async def infer(client: Client, body: dict[str, Any], status: int = 200, **headers: str) -> dict[str, Any]:
    response = await client.post("/api/v1/infer", json=body, headers=headers)
    assert response.status == status, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def result(client: Client, job_id: str, timeout: float = 5, status: int = 200) -> dict[str, Any]:
    response = await client.get(f"/api/v1/result/{job_id}?timeout={timeout}")
    assert response.status == status, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def test_submit_status_and_long_poll(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend)
    job = await infer(client, {"prompt": "What is the capital of France?", "session_id": "u1"})
    assert set(job) >= {"request_id", "status", "result", "error"}
    assert job["status"] in ("pending", "processing") and job["result"] is None and job["error"] is None
    done = await result(client, job["request_id"])
    assert (done["status"], done["result"]) == ("completed", "echo: What is the capital of France?")
    status = await (await client.get(f"/api/v1/status/{job['request_id']}")).json()
    assert status["status"] == "completed"
    assert (await client.get("/api/v1/status/nope")).status == 404
    assert (await client.get("/api/v1/result/nope")).status == 404


async def test_result_times_out_with_408_and_the_current_state(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    backend.gate.clear()
    job = await infer(client, {"prompt": "slow"})
    await backend.started.wait()
    body = await result(client, job["request_id"], timeout=0.1, status=408)
    assert body["status"] == "processing"
    backend.gate.set()
    assert (await result(client, job["request_id"]))["status"] == "completed"


async def test_priorities_are_served_in_order_by_one_busy_worker(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, concurrency=1, cache_results=False)
    backend.gate.clear()
    first = await infer(client, {"prompt": "first"})
    await backend.started.wait()
    ids = []
    for level in ("low", "normal", "critical", "high", "low"):
        body = {"prompt": f"p-{level}-{len(ids)}", "metadata": {"priority": level}}
        ids.append((await infer(client, body))["request_id"])
    backend.gate.set()
    for job_id in [first["request_id"], *ids]:
        await result(client, job_id)
    assert backend.calls == ["first", "p-critical-2", "p-high-3", "p-normal-1", "p-low-0", "p-low-4"]


async def test_rate_limit_per_session(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    # rate_limit_by session: the old behaviour, one bucket per session id whoever sends it.
    client = await start(
        aiohttp_client, backend, rate_limit_requests=2, rate_limit_window=60, rate_limit_by="session"
    )
    for i in range(2):
        await infer(client, {"prompt": f"p{i}", "session_id": "greedy"})
    response = await client.post("/api/v1/infer", json={"prompt": "p3", "session_id": "greedy"})
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert "rate_limit_requests" in (await response.json())["error"]["message"]
    await infer(client, {"prompt": "p4", "session_id": "other"})


@pytest.mark.parametrize("by", ["both", "client"])
async def test_invented_session_ids_do_not_bypass_the_rate_limit(
    aiohttp_client: MakeClient, backend: FakeBackend, by: str
) -> None:
    client = await start(
        aiohttp_client, backend, rate_limit_requests=3, rate_limit_window=60, rate_limit_by=by
    )
    for i in range(3):
        await infer(client, {"prompt": f"p{i}", "session_id": f"fresh-{i}"})
    response = await client.post("/api/v1/infer", json={"prompt": "p3", "session_id": "fresh-3"})
    assert response.status == 429, await response.text()
    message = (await response.json())["error"]["message"]
    assert "client 127.0.0.1" in message and "rate_limit_by" in message
    assert int(response.headers["Retry-After"]) >= 1


async def test_rate_limit_by_both_also_limits_one_session_below_the_client_budget(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, rate_limit_requests=2, rate_limit_window=60)
    await infer(client, {"prompt": "a", "session_id": "s"})
    await infer(client, {"prompt": "b"})  # no session: only the client bucket counts it
    response = await client.post("/api/v1/infer", json={"prompt": "c", "session_id": "s"})
    assert response.status == 429 and "client 127.0.0.1" in (await response.json())["error"]["message"]


async def test_rate_limit_by_both_refuses_a_spent_session(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, rate_limit_requests=2, rate_limit_window=60)
    orchestrator = client.server.app[ORCHESTRATOR_KEY]
    assert orchestrator.rate_keys("s", "10.0.0.1") == [
        ("client:10.0.0.1", "client 10.0.0.1"),
        ("session:s", "session 's'"),
    ]
    # The session's bucket is spent by another address (a second proxy, say): this client is refused.
    assert orchestrator.bucket is not None
    for _ in range(2):
        assert (await orchestrator.bucket.acquire("session:s")).allowed
    response = await client.post("/api/v1/infer", json={"prompt": "x", "session_id": "s"})
    assert response.status == 429 and "session 's'" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    ("parameters", "param", "hint"),
    [
        ({"max_tokens": -1}, "parameters.max_tokens", "integer from 1 to"),
        ({"max_tokens": 0}, "parameters.max_tokens", "integer from 1 to"),
        ({"max_tokens": "100"}, "parameters.max_tokens", "integer from 1 to"),
        ({"max_tokens": True}, "parameters.max_tokens", "integer from 1 to"),
        ({"max_tokens": 2**63}, "parameters.max_tokens", "integer from 1 to 9223372036854775807"),
        ({"seed": -(2**63) - 1}, "parameters.seed", "64-bit integer"),
        ({"n": 10_000}, "parameters.n", "must be 1"),
        ({"n": 2}, "parameters.n", "must be 1"),
        ({"n": 1.0}, "parameters.n", "must be 1"),
        ({"temperature": 2.5}, "parameters.temperature", "from 0 to 2"),
        ({"temperature": -0.1}, "parameters.temperature", "from 0 to 2"),
        ({"temperature": "hot"}, "parameters.temperature", "from 0 to 2"),
        ({"top_p": 1.5}, "parameters.top_p", "from 0 to 1"),
        ({"top_p": [0.5]}, "parameters.top_p", "from 0 to 1"),
        ({"stop": 7}, "parameters.stop", "list of up to 4 strings"),
        ({"seed": 1.5}, "parameters.seed", "integer"),
        ({"stream": True}, "parameters.stream", "top level"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    aiohttp_client: MakeClient, backend: FakeBackend, parameters: dict[str, Any], param: str, hint: str
) -> None:
    client = await start(aiohttp_client, backend)
    response = await client.post("/api/v1/infer", json={"prompt": "hi", "parameters": parameters})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid_parameter" and error["param"] == param
    assert param in error["message"] and hint in error["message"]
    assert backend.calls == [], "nothing ran"


@pytest.mark.parametrize("parameters", [[1, 2], "max_tokens=5", 3])
async def test_parameters_that_are_not_an_object_are_400(
    aiohttp_client: MakeClient, backend: FakeBackend, parameters: Any
) -> None:
    client = await start(aiohttp_client, backend)
    response = await client.post("/api/v1/infer", json={"prompt": "hi", "parameters": parameters})
    assert response.status == 400 and (await response.json())["error"]["param"] == "parameters"


async def test_valid_parameters_are_accepted(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend)
    parameters = {
        "max_tokens": 5,
        "n": 1,
        "temperature": 0,
        "top_p": 1,
        "stop": ["\n"],
        "seed": 3,
        "presence_penalty": None,
        "logit_bias": {"50256": -100},
    }
    job = await infer(client, {"prompt": "hi", "parameters": parameters})
    assert (await result(client, job["request_id"]))["status"] == "completed"


async def test_identical_prompts_hit_the_cache_and_running_ones_coalesce(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    backend.gate.clear()
    leader = await infer(client, {"prompt": "same"})
    await backend.started.wait()
    followers = [await infer(client, {"prompt": "same"}) for _ in range(3)]
    backend.gate.set()
    for job in [leader, *followers]:
        assert (await result(client, job["request_id"]))["result"] == "echo: same"
    assert backend.calls == ["same"], "the followers waited for the leader"
    cached = await infer(client, {"prompt": "same"})
    assert (cached["status"], cached["cached"], cached["result"]) == ("completed", True, "echo: same")
    stats = await (await client.get("/stats")).json()
    assert (stats["coalesced"], stats["cache_hits"]) == (3, 1)
    metrics = await (await client.get("/metrics")).text()
    assert "llmkit_orchestrate_coalesced_total 3.0" in metrics
    assert 'llmkit_orchestrate_finished_jobs_total{status="completed"} 1.0' in metrics


async def test_idempotency_key_returns_the_first_job(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    first = await infer(client, {"prompt": "once"}, **{"Idempotency-Key": "k-1"})
    again = await infer(client, {"prompt": "once"}, **{"Idempotency-Key": "k-1"})
    assert again["request_id"] == first["request_id"]
    other = await infer(client, {"prompt": "once"}, **{"Idempotency-Key": "k-2"})
    assert other["request_id"] != first["request_id"]


async def test_a_repeated_submit_queues_a_job_its_first_replica_stored_but_never_queued(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    # A replica killed between storing the job and queueing it: the balancer replays the submit on another
    # replica, which finds the key taken by a pending job that no queue holds.
    app = create_app(make_settings(), backend)
    client = await aiohttp_client(app)
    orchestrator = app[ORCHESTRATOR_KEY]
    orphan = Job(id="stored-not-queued", prompt="orphan")
    await orchestrator.store.add(orphan)
    assert await orchestrator.store.claim_key(idempotency_name(ANONYMOUS, "k-dead"), orphan.id) == orphan.id
    again = await infer(client, {"prompt": "orphan"}, **{"Idempotency-Key": "k-dead"})
    assert again["request_id"] == orphan.id
    assert (await result(client, orphan.id))["result"] == "echo: orphan"
    # A repeat of a job that is queued or done runs nothing more.
    await infer(client, {"prompt": "orphan"}, **{"Idempotency-Key": "k-dead"})
    assert backend.calls == ["orphan"]


async def test_cancel_a_pending_job_only(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend, concurrency=1)
    backend.gate.clear()
    running = await infer(client, {"prompt": "running"})
    await backend.started.wait()
    waiting = await infer(client, {"prompt": "waiting"})
    response = await client.delete(f"/api/v1/jobs/{waiting['request_id']}")
    assert response.status == 200 and (await response.json())["status"] == "cancelled"
    assert (await client.delete(f"/api/v1/jobs/{running['request_id']}")).status == 409
    assert (await client.delete("/api/v1/jobs/unknown")).status == 404
    backend.gate.set()
    await result(client, running["request_id"])
    assert backend.calls == ["running"], "a cancelled job never runs"


async def test_failures_and_timeouts_are_terminal(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend, job_timeout_s=0.2)
    failed = await result(client, (await infer(client, {"prompt": "fail now"}))["request_id"])
    assert failed["status"] == "failed" and "the model is on fire" in failed["error"]
    hung = await result(client, (await infer(client, {"prompt": "hang on"}))["request_id"])
    assert hung["status"] == "timeout" and "job_timeout_s" in hung["error"]


async def test_a_full_queue_is_429(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend, concurrency=1, capacity=1, cache_results=False)
    backend.gate.clear()
    await infer(client, {"prompt": "busy"})
    await backend.started.wait()
    await infer(client, {"prompt": "queued"})
    response = await client.post("/api/v1/infer", json={"prompt": "one too many"})
    assert response.status == 429 and "full" in (await response.json())["error"]["message"]
    backend.gate.set()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "metadata": {"priority": "urgent"}}, "metadata.priority"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "metadata": []}, "metadata"),
    ],
)
async def test_bad_submissions_are_400_naming_the_field(
    aiohttp_client: MakeClient, backend: FakeBackend, body: dict[str, Any], param: str
) -> None:
    client = await start(aiohttp_client, backend)
    error = (await infer(client, body, status=400))["error"]
    assert error["param"] == param and error["message"]


async def test_cors_can_be_switched_off_and_long_polls_are_bounded(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, cors=False, long_poll_max_s=5)
    response = await client.get("/health", headers={"Origin": "http://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    job = await infer(client, {"prompt": "x"})
    for bad in ("6", "-1", "soon"):
        response = await client.get(f"/api/v1/result/{job['request_id']}?timeout={bad}")
        assert response.status == 400 and "long_poll_max_s" in (await response.json())["error"]["message"]


async def test_health_cors_and_preflight(aiohttp_client: MakeClient, backend: FakeBackend) -> None:
    client = await start(aiohttp_client, backend)
    response = await client.get("/health", headers={"Origin": "http://app.example"})
    body = await response.json()
    assert body["status"] == "healthy" and body["version"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    headers = {"Origin": "http://x", "Access-Control-Request-Method": "POST"}
    preflight = await client.options("/api/v1/infer", headers=headers)
    assert preflight.status == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]


async def test_websocket_many_jobs_in_flight_deltas_and_bad_messages(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, cache_results=False)
    async with client.ws_connect("/api/v1/stream") as ws:
        await ws.send_str("{not json")
        assert "error" in await ws.receive_json(timeout=5)
        for i in range(5):
            await ws.send_json({"prompt": f"job {i}", "session_id": "ws-1"})
        await ws.send_json({"prompt": "tell me a story", "stream": True})
        seen: dict[str, list[dict[str, Any]]] = {}
        finished = 0
        while finished < 6:
            message = await ws.receive_json(timeout=5)
            seen.setdefault(message["request_id"], []).append(message)
            finished += message.get("status") == "completed"
        for messages in seen.values():
            assert messages[0]["status"] == "processing" and messages[-1]["status"] == "completed"
        streamed = next(m for m in seen.values() if m[-1]["result"] == "echo: tell me a story")
        assert [m["delta"] for m in streamed if "delta" in m] == ["tell", "me", "a", "story"]
        await ws.send_json({"prompt": ""})
        assert "prompt" in (await ws.receive_json(timeout=5))["error"]
        await ws.ping()
        await ws.send_json({"prompt": "still open"})
        assert (await ws.receive_json(timeout=5))["status"] == "processing"
        assert (await ws.receive_json(timeout=5))["result"] == "echo: still open"


async def test_a_message_over_the_cap_closes_with_1009(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, ws_max_message_kb=1)
    async with client.ws_connect("/api/v1/stream") as ws:
        await ws.send_str('{"prompt": "' + "x" * 4096 + '"}')
        message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009


async def test_a_job_longer_than_its_lease_keeps_it_by_heartbeat(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, concurrency=2, lease_s=0.2)
    backend.gate.clear()
    job = await infer(client, {"prompt": "long job"})
    await backend.started.wait()
    await asyncio.sleep(0.7)  # three leases long: without the heartbeat the other worker would take it
    backend.gate.set()
    assert (await result(client, job["request_id"]))["status"] == "completed"
    assert backend.calls == ["long job"], "the job ran once"
    stats = await (await client.get("/stats")).json()
    assert stats["queue"]["total"] == 0


async def test_a_job_whose_workers_keep_dying_fails_as_abandoned(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    from llmkit.orchestrate.jobs import PROCESSING, Job
    from llmkit.orchestrate.workers import MAX_DELIVERIES

    client = await start(aiohttp_client, backend, concurrency=1)
    orchestrator = client.app[ORCHESTRATOR_KEY]
    backend.gate.clear()  # the worker is busy with another job while the poison one is set up
    await infer(client, {"prompt": "busy"})
    await backend.started.wait()
    poison = Job("poison", "crashes every worker", status=PROCESSING)
    await orchestrator.store.add(poison)
    await orchestrator.queue.put("poison", b"")
    for _ in range(MAX_DELIVERIES):  # taken and lost as often as dead workers would
        item = await orchestrator.queue.get(timeout=1, lease=5)
        assert item is not None and item.id == "poison"
        await orchestrator.queue.release(item.id, item.token)
    backend.gate.set()
    job = await result(client, "poison")
    assert job["status"] == "failed" and "abandoned" in job["error"]
    assert "crashes every worker" not in backend.calls


async def test_a_processing_job_whose_delivery_the_queue_lost_runs_again_after_its_lease(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    # What a Redis failover can leave: the job's "processing" write reached the replica, the queue's take
    # (which counted the delivery) did not, so the item comes back as if never delivered.
    from llmkit.orchestrate.jobs import PROCESSING, Job

    client = await start(aiohttp_client, backend, concurrency=1, lease_s=0.3)
    orchestrator = client.app[ORCHESTRATOR_KEY]
    stranded = Job("stranded", "finish me", status=PROCESSING, attempts=1)
    await orchestrator.store.add(stranded)
    await orchestrator.queue.put("stranded", b"")
    job = await result(client, "stranded", timeout=10)
    assert (job["status"], job["result"]) == ("completed", "echo: finish me")
    assert backend.calls == ["finish me"], "it ran once, after its lease ran out"


async def test_a_stopping_server_refuses_submits_with_503_and_retry_after(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    stop_requested(client.server.app)  # what SIGTERM does before the drain
    response = await client.post("/api/v1/infer", json={"prompt": "too late"})
    assert response.status == 503 and response.headers["Retry-After"] == "2"
    error = (await response.json())["error"]
    assert error["code"] == "shutting_down" and "no new jobs" in error["message"]
    health = await client.get("/health")
    assert health.status == 503 and (await health.json())["status"] == "draining"
    async with client.ws_connect("/api/v1/stream") as ws:
        await ws.send_json({"prompt": "too late"})
        assert (await ws.receive_json(timeout=5))["code"] == "shutting_down"
    assert backend.calls == []


async def test_a_stop_lets_running_jobs_finish_and_fails_pending_ones_in_memory(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, concurrency=1)
    backend.gate.clear()
    running = await infer(client, {"prompt": "running"})
    await backend.started.wait()
    pending = await infer(client, {"prompt": "pending"})
    stop_requested(client.server.app)
    failed = await result(client, pending["request_id"])
    assert failed["status"] == "failed" and "shut down before the job started" in failed["error"]
    backend.gate.set()
    assert (await result(client, running["request_id"]))["status"] == "completed"
    assert backend.calls == ["running"], "no job was taken after the stop"


async def test_a_job_cut_off_by_the_drain_timeout_fails_saying_why(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend, drain_timeout=0.05)
    orchestrator = client.server.app[ORCHESTRATOR_KEY]
    job = await infer(client, {"prompt": "hang on"})
    await backend.started.wait()
    stop_requested(client.server.app)
    await client.close()  # the drain: cleanup waits for running jobs up to server.drain_timeout
    ended = await orchestrator.store.get(job["request_id"])
    assert ended is not None and ended.status == "failed"
    assert ended.error is not None and "server.drain_timeout" in ended.error


async def test_a_long_poll_rereads_the_job_when_the_store_says_events_were_missed(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    backend.gate.clear()
    job = await infer(client, {"prompt": "quiet"})
    store = client.server.app[ORCHESTRATOR_KEY].store
    assert isinstance(store, MemoryJobStore)
    poll = asyncio.ensure_future(result(client, job["request_id"], timeout=30))
    while not store._listeners.wanted(job["request_id"]):
        await asyncio.sleep(0.01)  # the long poll is waiting for the job's events
    # The job ends without its event reaching this process (as while Redis pub/sub reconnected) ...
    unheard = Job(
        **{**(await store.get(job["request_id"])).to_dict(), "status": "completed", "result": "done unheard"}
    )
    store._jobs[unheard.id] = unheard
    await asyncio.sleep(0.05)
    assert not poll.done()
    store._listeners.resync()  # ... then the store's feed reconnects
    assert (await poll)["result"] == "done unheard"
    backend.gate.set()


async def test_a_job_the_queue_could_not_take_fails_instead_of_staying_pending(
    aiohttp_client: MakeClient, backend: FakeBackend
) -> None:
    client = await start(aiohttp_client, backend)
    orchestrator = client.server.app[ORCHESTRATOR_KEY]

    async def unreachable(*args: Any, **kwargs: Any) -> int:
        raise BackendError("redis queue put failed: ConnectionError: Connection refused")

    orchestrator.queue.put = unreachable  # type: ignore[method-assign]
    response = await client.post("/api/v1/infer", json={"prompt": "lost?"})
    assert response.status == 503 and (await response.json())["error"]["code"] == "backend_unavailable"
    store = orchestrator.store
    assert isinstance(store, MemoryJobStore)
    assert store.counts()["failed"] == 1 and store.counts()["pending"] == 0


async def test_workers_wait_out_queue_errors_log_once_and_go_on(
    aiohttp_client: MakeClient, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start(aiohttp_client, backend, concurrency=2)
    queue = client.server.app[ORCHESTRATOR_KEY].queue
    real_get, failures = queue.get, 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures < 6:
            failures += 1
            raise BackendError("redis queue get failed: ConnectionError: Connection refused")
        return await real_get(*args, **kwargs)

    caplog.set_level("INFO", "llmkit.orchestrate")
    queue.get = flaky  # type: ignore[method-assign]
    while failures < 6:
        await asyncio.sleep(0.05)  # both workers hit the errors (each looks again within POLL_S)
    job = await infer(client, {"prompt": "after the blip"})
    assert (await result(client, job["request_id"]))["status"] == "completed"
    lost = [r for r in caplog.records if "cannot reach the queue" in r.message]
    back = [r for r in caplog.records if "reach the queue and job store again" in r.message]
    assert len(lost) == 1 and lost[0].levelname == "WARNING"
    assert len(back) == 1 and back[0].levelname == "INFO"
