"""The gateway's routes over a scripted upstream: coalescing, cache, queue order, cancel, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from tests.unit.gateway_fakes import HeldPool, gateway_settings

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]
Client = TestClient[Any, web.Application]


def chat(text: str = "What is Rust?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def start(aiohttp_client: MakeClient, pool: HeldPool, **gateway: Any) -> Client:
    app = create_app(gateway_settings(**gateway), pool=pool)
    return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def test_identical_requests_in_flight_share_one_upstream_call(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool)
    posts = [asyncio.create_task(client.post("/api/chat-optimized", json=chat())) for _ in range(30)]
    await pool.started.wait()
    await asyncio.sleep(0.05)
    pool.release()
    responses = await asyncio.gather(*posts)
    bodies = [await r.json() for r in responses]
    assert len(pool.calls) == 1
    assert {b["message"]["content"] for b in bodies} == {"What is Rust? "}
    assert sorted(r.headers["X-Gateway-Cache"] for r in responses).count("coalesced") == 29
    stats = await (await client.get("/api/cache-stats")).json()
    assert stats["batch_processor"]["total_requests"] == 30
    assert stats["batch_processor"]["upstream_calls"] == 1
    assert stats["batch_processor"]["average_batch_size"] == 30


async def test_late_streaming_follower_gets_what_it_missed_then_the_rest(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool)
    body = chat("one two three four", stream=True)
    first = asyncio.create_task(client.post("/api/chat-optimized", json=body))
    await pool.first_piece_sent.wait()
    late = asyncio.create_task(client.post("/api/chat-optimized", json=body))
    await until(lambda: any(f.listeners == 2 for f in client.app[_gw()].flights.values()))
    pool.release()
    for response in await asyncio.gather(first, late):
        events = sse_events(await response.text())
        assert "".join(e.get("content", "") for e in events) == "one two three four "
        assert events[-1] == {"done": True, "cached": False, "conversation_id": events[-1]["conversation_id"]}
    assert len(pool.calls) == 1


def _gw() -> Any:
    from llmkit.gateway.state import GATEWAY_KEY

    return GATEWAY_KEY


async def test_batch_max_size_caps_the_requests_one_call_serves(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, batch_max_size=3, cache_enabled=False)
    posts = [asyncio.create_task(client.post("/api/chat-optimized", json=chat())) for _ in range(7)]
    await until(lambda: client.app[_gw()].counters.requests == 7)
    pool.release()
    await asyncio.gather(*posts)
    assert len(pool.calls) == 3  # 3 + 3 + 1


async def test_batch_timeout_keeps_a_finished_call_joinable(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, pool, batch_timeout_ms=5000, cache_enabled=False)
    first = await client.post("/api/chat-optimized", json=chat())
    second = await client.post("/api/chat-optimized", json=chat())
    assert (await first.json())["message"] == (await second.json())["message"]
    assert second.headers["X-Gateway-Cache"] == "coalesced"
    assert len(pool.calls) == 1


async def test_cache_hit_replay_and_use_cache_false(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, pool)
    first = await (await client.post("/api/chat-optimized", json=chat())).json()
    assert first["cached"] is False
    again = await (await client.post("/api/chat-optimized", json=chat())).json()
    assert again["cached"] is True and again["message"] == first["message"]
    streamed = sse_events(await (await client.post("/api/chat-optimized", json=chat(stream=True))).text())
    assert all(e["cached"] is True for e in streamed)
    assert "".join(e.get("content", "") for e in streamed) == first["message"]["content"]
    fresh = await (await client.post("/api/chat-optimized", json=chat(use_cache=False))).json()
    assert fresh["cached"] is False
    assert len(pool.calls) == 2
    # Sampling parameters are part of the key: another temperature is another answer.
    await client.post("/api/chat-optimized", json=chat(temperature=0.1))
    assert len(pool.calls) == 3
    assert pool.calls[-1].params == {"temperature": 0.1}


async def test_cache_disabled_never_answers_from_cache(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, pool, cache_enabled=False)
    for _ in range(2):
        assert (await (await client.post("/api/chat-optimized", json=chat())).json())["cached"] is False
    assert len(pool.calls) == 2
    stats = await (await client.get("/api/cache-stats")).json()
    assert stats["response_cache"] == {"enabled": False}


async def test_queue_order_position_eta_and_cancel(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, max_concurrent=1, cache_enabled=False)
    running = await (await client.post("/api/chat-queue", json=chat("first"))).json()
    assert running["status"]["queue_position"] == 0 and running["status"]["is_processing"] is True
    low = await (await client.post("/api/chat-queue", json=chat("low", priority=-1))).json()
    normal = await (await client.post("/api/chat-queue", json=chat("normal", priority=0))).json()
    urgent = await (await client.post("/api/chat-queue", json=chat("urgent", priority="critical"))).json()
    doomed = await (await client.post("/api/chat-queue", json=chat("doomed"))).json()
    assert low["status"]["queue_position"] == 1
    assert normal["status"]["queue_position"] == 1  # ahead of the low one
    assert urgent["status"]["queue_position"] == 1
    assert doomed["status"]["queue_length"] == 4
    # Before any call was measured, the ETA uses the seed's 30 s per call.
    assert doomed["status"]["estimated_wait_time"] == 3 * 30_000
    state = await (await client.get("/api/chat-queue", params={"requestId": low["request_id"]})).json()
    assert state["status"] == "queued" and state["queue_position"] == 4
    cancelled = await client.delete("/api/chat-queue", params={"requestId": doomed["request_id"]})
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    busy = await client.delete("/api/chat-queue", params={"requestId": running["request_id"]})
    assert busy.status == 409
    overview = await (await client.get("/api/chat-queue")).json()
    assert overview["queue_length"] == 3
    assert [q["request_id"] for q in overview["queued"]] == [
        urgent["request_id"],
        normal["request_id"],
        low["request_id"],
    ]
    pool.release()
    await until(lambda: len(pool.calls) == 4)
    assert [c.messages[-1]["content"] for c in pool.calls] == ["first", "urgent", "normal", "low"]
    done = await (await client.get("/api/chat-queue", params={"requestId": low["request_id"]})).json()
    await until(lambda: client.app[_gw()].slots.busy == 0)
    done = await (await client.get("/api/chat-queue", params={"requestId": low["request_id"]})).json()
    assert done["status"] == "completed" and done["result"]["message"]["content"] == "low "
    gone = await (await client.get("/api/chat-queue", params={"requestId": doomed["request_id"]})).json()
    assert gone["status"] == "cancelled"
    # Measured calls replace the default: the ETA now follows the moving average.
    assert client.app[_gw()].slots.timer.count == 4
    assert (await client.get("/api/chat-queue", params={"requestId": "nope"})).status == 404


async def test_full_queue_answers_429(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, max_concurrent=1, max_queue_size=2, cache_enabled=False)
    for n in range(3):
        assert (await client.post("/api/chat-queue", json=chat(f"q{n}"))).status == 200
    full = await client.post("/api/chat-optimized", json=chat("one too many"))
    assert full.status == 429
    body = await full.json()
    assert "gateway.max_queue_size" in body["error"]["message"]
    assert full.headers["Retry-After"]
    pool.release()


async def test_disconnecting_only_listener_cancels_the_upstream_call(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, cache_enabled=False)
    response = await client.post("/api/chat-optimized", json=chat("a b c", stream=True))
    assert (await response.content.readline()).startswith(b"data: ")
    response.close()
    await until(lambda: pool.cancelled == 1)
    assert client.app[_gw()].counters.cancelled_calls == 1
    assert client.app[_gw()].flights == {}


async def test_disconnect_of_one_listener_leaves_the_others_served(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, cache_enabled=False)
    leaver = await client.post("/api/chat-optimized", json=chat("a b c", stream=True))
    stayer = asyncio.create_task(client.post("/api/chat-optimized", json=chat("a b c", stream=True)))
    await until(lambda: any(f.listeners == 2 for f in client.app[_gw()].flights.values()))
    leaver.close()
    await until(lambda: all(f.listeners == 1 for f in client.app[_gw()].flights.values()))
    pool.release()
    events = sse_events(await (await stayer).text())
    assert "".join(e.get("content", "") for e in events) == "a b c "
    assert pool.cancelled == 0


async def test_disconnect_while_queued_frees_the_place(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, pool, max_concurrent=1, cache_enabled=False)
    busy = asyncio.create_task(client.post("/api/chat-optimized", json=chat("busy")))
    await pool.started.wait()
    waiting = asyncio.create_task(client.post("/api/chat-optimized", json=chat("waiting", stream=True)))
    await until(lambda: client.app[_gw()].slots.waiting == 1)
    waiting.cancel()
    await until(lambda: client.app[_gw()].slots.waiting == 0)
    pool.release()
    assert (await busy).status == 200
    assert [c.messages[-1]["content"] for c in pool.calls] == ["busy"]


async def test_conversation_id_continues_a_conversation(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, pool)
    first = await (await client.post("/api/chat-optimized", json=chat("hello there"))).json()
    cid = first["conversation_id"]
    body = chat("and then", conversation_id=cid)
    await client.post("/api/chat-optimized", json=body)
    assert [m["content"] for m in pool.calls[-1].messages] == ["hello there", "hello there ", "and then"]
    # Without the id, the whole history finds the same conversation by its hash.
    history = [*pool.calls[-1].messages, {"role": "assistant", "content": "and then "}]
    third = await client.post(
        "/api/chat-optimized", json={"messages": [*history, {"role": "user", "content": "x"}]}
    )
    assert (await third.json())["conversation_id"] == cid
    stats = await (await client.get("/api/cache-stats")).json()
    assert stats["conversation_cache"]["hit_rate"] > 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "messages must be a non-empty list"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (chat(stream="yes"), "stream must be true or false"),
        (chat(priority="urgent"), "priority must be an integer or one of"),
        (chat(temperature="hot"), "temperature must be a number"),
        (chat(temperature=2.5), "temperature must be a number from 0 to 2; got 2.5"),
        (chat(options={"top_p": -0.1}), "top_p must be a number from 0 to 1; got -0.1"),
        (chat(presence_penalty=-3), "presence_penalty must be a number from -2 to 2; got -3"),
        (chat(max_tokens=0), "max_tokens must be a positive integer"),
    ],
)
async def test_bad_requests_get_400_saying_what_to_change(
    aiohttp_client: MakeClient, body: dict[str, Any], needle: str
) -> None:
    client = await start(aiohttp_client, HeldPool(hold=False))
    response = await client.post("/api/chat-optimized", json=body)
    assert response.status == 400
    assert needle in (await response.json())["error"]["message"]


async def test_cache_stats_actions(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, pool)
    await client.post("/api/chat-optimized", json=chat())
    # The seed's curl sends -d without a Content-Type header (form-urlencoded), as any web page could
    # cross-site: refused, unless a credential comes with it (no page can add one without CORS).
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b'{"action":"clear_response_cache"}'
    refused = await client.post("/api/cache-stats", data=body, headers=form)
    assert refused.status == 415 and "API key" in (await refused.json())["error"]["message"]
    cleared = await client.post("/api/cache-stats", data=body, headers={**form, "X-API-Key": "any"})
    assert (await cleared.json())["removed"] == {"response_cache": 1}
    warmed = await (
        await client.post("/api/cache-stats", json={"action": "warm_model", "data": {"model": "m"}})
    ).json()
    assert warmed["model"] == "m" and "load_ms" in warmed
    bad = await client.post("/api/cache-stats", json={"action": "explode"})
    assert bad.status == 400 and "clear_conversation_cache" in (await bad.json())["error"]["message"]
