"""A real `llmkit gateway` over a real `llmkit simulate`: 20,000 distinct prompts and the gateway's RSS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.serve_process import ServerProcess

REQUESTS = 20_000
CACHE_MB = 8
CONVERSATION_MB = 8
# What the gateway may grow by besides its caches: allocator slack and fragmentation, 64 connections'
# buffers, garbage waiting for the next young collection. Measured: ~10 MiB.
ALLOWANCE_MB = 24
QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false", "LLMKIT_SERVER_LOG_LEVEL": "warning"}


def rss_mb(pid: int) -> float:
    """The process's resident set size in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ServerProcess]:
    """A gateway with 8 MB for each cache, in front of a simulator answering at once."""
    with ServerProcess(tmp_path, "--port", "0", env=QUIET, command="simulate") as sim:
        upstream = sim.wait_listening()
        env = {
            **QUIET,
            "LLMKIT_GATEWAY_UPSTREAMS": upstream,
            "LLMKIT_GATEWAY_MAX_CONCURRENT": "32",
            "LLMKIT_GATEWAY_MAX_QUEUE_SIZE": "10000",
            "LLMKIT_GATEWAY_CACHE_MAX_SIZE_MB": str(CACHE_MB),
            "LLMKIT_GATEWAY_CONVERSATION_MAX_SIZE_MB": str(CONVERSATION_MB),
        }
        with ServerProcess(tmp_path, "--port", "0", "--workers", "1", env=env, command="gateway") as gw:
            gw.wait_listening()
            yield gw


async def send_distinct(url: str, count: int, concurrency: int = 64) -> None:
    """`count` distinct one-message chats without a conversation id, `concurrency` at a time."""
    numbers = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for n in numbers:
                body = {"messages": [{"role": "user", "content": f"distinct prompt {n} about Python"}]}
                async with session.post(f"{url}/api/chat-optimized", json=body) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def cache_stats(url: str) -> dict[str, dict[str, float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/cache-stats") as response:
        return await response.json()  # type: ignore[no-any-return]


@pytest.mark.timeout(180)
async def test_20000_distinct_requests_grow_rss_by_at_most_the_cache_budgets_plus_24_mib(
    gateway: ServerProcess,
) -> None:
    """RSS grows by at most gateway.cache_max_size_mb + gateway.conversation_max_size_mb + 24 MiB.

    The bound: 8 MiB of response cache + 8 MiB of conversation cache (each cache's byte budget, which
    counts what its entries hold) + a fixed allowance of 24 MiB, measured from the RSS after the first
    request. Before the caches counted what they held, 20,000 prompts grew it by ~137 MiB.
    """
    assert gateway.proc is not None
    await send_distinct(gateway.url, 1)
    before = rss_mb(gateway.proc.pid)
    await send_distinct(gateway.url, REQUESTS)
    grown = rss_mb(gateway.proc.pid) - before
    stats = await cache_stats(gateway.url)
    assert stats["response_cache"]["total_size_mb"] <= CACHE_MB
    assert stats["conversation_cache"]["total_size_mb"] <= CONVERSATION_MB
    assert grown <= CACHE_MB + CONVERSATION_MB + ALLOWANCE_MB, (grown, stats)
