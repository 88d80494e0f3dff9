"""The gateway's caches hold what they report: 20,000 distinct requests measured with tracemalloc."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from llmkit.gateway.calls import ChatCall, OnPiece, Outcome
from llmkit.gateway.state import GATEWAY_KEY
from tests.unit.gateway_fakes import HeldPool, gateway_settings

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]
MB = 1024 * 1024
REQUESTS = 20_000
# An answer the size of the simulator's (about 1.2 KB), different for every prompt.
ANSWER = "Use asyncio.gather with one aiohttp.ClientSession for every request you make. " * 15


class LongAnswerPool(HeldPool):
    """Answers at once with ANSWER after the prompt, so every answer is distinct."""

    def __init__(self) -> None:
        super().__init__(hold=False)
        self.last: ChatCall | None = None

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        self.last = call
        text = f"{call.messages[-1]['content']}: {ANSWER}"
        usage = {"prompt_tokens": 9, "completion_tokens": 200, "total_tokens": 209}
        return Outcome(text, call.model, "stop", usage, "long")


async def flood(client: TestClient[Any, web.Application], count: int, start: int = 0) -> None:
    """`count` distinct one-message chats without a conversation id, 32 at a time."""
    url = client.make_url("/api/chat-optimized")
    queue = iter(range(start, start + count))

    async def worker() -> None:
        for n in queue:
            body = {"messages": [{"role": "user", "content": f"distinct prompt {n}"}]}
            async with client.session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()

    await asyncio.gather(*(worker() for _ in range(32)))


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_20000_distinct_requests_leave_caches_within_budget_and_reported_sizes_true(
    aiohttp_client: MakeClient,
) -> None:
    """The bytes /api/cache-stats and each cache's stats() report are within 20% of what tracemalloc
    measures the caches hold (the memory freed by clearing them), and both stay within the configured
    gateway.cache_max_size_mb and gateway.conversation_max_size_mb (4 MB each; 20,000 answers need ~60 MB)."""
    budget_mb = 4.0
    settings = gateway_settings(cache_max_size_mb=budget_mb, conversation_max_size_mb=budget_mb)
    client = await aiohttp_client(create_app(settings, pool=LongAnswerPool()))
    gateway = client.app[GATEWAY_KEY]
    assert gateway.cache is not None and gateway.conversations is not None
    tracemalloc.start(1)
    try:
        await flood(client, REQUESTS)
        report = await (await client.get("/api/cache-stats")).json()
        response_stats = await gateway.cache.stats()
        conversation_stats = (await gateway.conversations.stats())["cache"]
        full = traced()
        await gateway.cache.clear()
        after_response = traced()
        await gateway.conversations.clear()
        after_conversation = traced()
    finally:
        tracemalloc.stop()
    measured = {"response": full - after_response, "conversation": after_response - after_conversation}
    reported = {"response": response_stats["bytes"], "conversation": conversation_stats["bytes"]}
    shown = {
        "response": report["response_cache"]["total_size_mb"] * MB,
        "conversation": report["conversation_cache"]["total_size_mb"] * MB,
    }
    assert response_stats["sets"] == REQUESTS and response_stats["evictions"] > 0
    for name in measured:
        assert abs(reported[name] - measured[name]) <= 0.2 * measured[name], (name, reported, measured)
        assert abs(shown[name] - reported[name]) <= 0.001 * MB, (name, shown, reported)
        assert reported[name] <= budget_mb * MB
        assert measured[name] <= 1.2 * budget_mb * MB, (name, measured)


async def test_one_off_prompts_cannot_push_out_a_conversation_that_was_continued(
    aiohttp_client: MakeClient,
) -> None:
    pool = LongAnswerPool()
    client = await aiohttp_client(create_app(gateway_settings(conversation_max_size_mb=1.0), pool=pool))
    conversations = client.app[GATEWAY_KEY].conversations
    assert conversations is not None
    first = await (await client.post("/api/chat-optimized", json=_chat("remember me"))).json()
    cid = first["conversation_id"]
    # Its first turn sits with the new conversations; the second moves it to the main cache.
    assert await conversations.new.get(f"id:{cid}") is not None
    await client.post("/api/chat-optimized", json=_chat("and then", conversation_id=cid))
    assert await conversations.cache.get(f"id:{cid}") is not None
    assert await conversations.new.get(f"id:{cid}") is None
    await flood(client, 2000)  # ~3 MB of one-off conversations through a 0.25 MB share
    new_stats = (await conversations.stats())["new_cache"]
    assert new_stats["evictions"] > 1000 and new_stats["bytes"] <= 0.25 * MB
    third = await client.post("/api/chat-optimized", json=_chat("still there?", conversation_id=cid))
    assert (await third.json())["conversation_id"] == cid
    assert pool.last is not None
    users = [m["content"] for m in pool.last.messages if m["role"] == "user"]
    assert users == ["remember me", "and then", "still there?"]


async def test_the_openai_face_keeps_no_conversation_the_client_cannot_name(
    aiohttp_client: MakeClient,
) -> None:
    client = await aiohttp_client(create_app(gateway_settings(), pool=LongAnswerPool()))
    conversations = client.app[GATEWAY_KEY].conversations
    assert conversations is not None
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    assert (await conversations.stats())["cache"]["entries"] == 0
    # With an id of its own the client can continue, so that conversation is kept.
    named = {**body, "conversation_id": "mine"}
    assert (await client.post("/v1/chat/completions", json=named)).status == 200
    assert await conversations.cache.get("id:mine") is not None


async def test_the_queue_keeps_at_most_queue_result_max_finished_results(
    aiohttp_client: MakeClient,
) -> None:
    from llmkit.gateway.queued import BOOK_KEY

    client = await aiohttp_client(create_app(gateway_settings(queue_result_max=50), pool=LongAnswerPool()))
    book = client.app[BOOK_KEY]
    ids = []
    for n in range(120):
        posted = await client.post("/api/chat-queue", json=_chat(f"queued {n}"))
        ids.append((await posted.json())["request_id"])
    async with asyncio.timeout(10):
        while len(book._finished) < 50 or any(r.finished_at is None for r in book.requests.values()):
            await asyncio.sleep(0.01)
    assert len(book.requests) == 50
    assert all(r.ticket.flight is None for r in book.requests.values())
    newest = await (await client.get("/api/chat-queue", params={"requestId": ids[-1]})).json()
    assert newest["status"] == "completed"
    oldest = await client.get("/api/chat-queue", params={"requestId": ids[0]})
    assert oldest.status == 404


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}
