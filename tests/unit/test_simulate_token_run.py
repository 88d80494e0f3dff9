"""TokenRun: a paced stream's tokens written from the shared millisecond ticks, with no task per token."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest
from aiohttp.http_writer import StreamWriter

from llmkit.simulate.latency import Latency
from llmkit.simulate.stream import RUN_DONE, RUN_DRAIN, RUN_GONE, Progress, TokenRun


class Transport:
    """Records what a run writes, and when; can be closed or report a full buffer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.frames: list[tuple[float, bytes]] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.frames.append((self.loop.time(), data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Protocol:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._paused = False


class Steps:
    """A sender whose step k is one event, `event k`, of one token."""

    def __init__(self) -> None:
        self.progress = Progress()

    def _step(self, k: int) -> tuple[list[bytes], int]:
        return [b"event %d\n\n" % k], 1


def run_of(transport: Transport, steps: int, itl: float, start: int = 1) -> tuple[TokenRun, StreamWriter]:
    loop = asyncio.get_running_loop()
    writer = StreamWriter(cast(Any, Protocol(transport)), loop)
    writer.enable_chunking()
    sender = Steps()
    latency = Latency(ttft=0.0, itl=itl)
    rng, now = random.Random(1), loop.time()
    fake = cast(Any, transport)
    run = TokenRun(sender._step, sender.progress, writer, fake, latency, rng, now, start, steps)
    return run, writer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def test_a_run_writes_each_step_as_a_chunk_an_itl_apart_and_counts_it() -> None:
    loop = asyncio.get_running_loop()
    transport = Transport(loop)
    started = loop.time()
    run, writer = run_of(transport, steps=5, itl=0.01)
    assert await asyncio.wait_for(run.future, 5) == RUN_DONE
    assert [data for _, data in transport.frames] == [chunk(b"event %d\n\n" % k) for k in range(1, 5)]
    # Steps 1..4 keep to the stream's timeline: step k is due k - 1 ITLs after the first; never early
    # (jitter aside: Latency(itl) has none).
    for k, (at, _) in enumerate(transport.frames):
        assert at >= started + k * 0.01 - 1e-9
    assert writer.output_size == sum(len(data) for _, data in transport.frames)
    assert run.progress.chunks == 4 and run.progress.tokens == 4


async def test_a_run_ends_gone_once_the_client_closes_even_between_long_gaps() -> None:
    loop = asyncio.get_running_loop()
    transport = Transport(loop)
    run, _ = run_of(transport, steps=10, itl=30.0)  # 30 s to the next token
    await asyncio.sleep(0.01)
    transport.closing = True
    # The run looks at the connection every 50 ms, not only when a token is due.
    assert await asyncio.wait_for(run.future, 5) == RUN_GONE
    assert len(transport.frames) <= 1


async def test_a_run_hands_back_to_its_task_when_the_socket_buffer_is_full() -> None:
    loop = asyncio.get_running_loop()
    transport = Transport(loop)
    transport.buffered = 1 << 20
    run, _ = run_of(transport, steps=10, itl=0.001)
    assert await asyncio.wait_for(run.future, 5) == RUN_DRAIN
    assert len(transport.frames) == 1 and run.k == 2  # the next step to write, after the drain


async def test_a_cancelled_run_writes_nothing_more_and_leaves_other_runs_alone() -> None:
    loop = asyncio.get_running_loop()
    cancelled_transport, other_transport = Transport(loop), Transport(loop)
    cancelled, _ = run_of(cancelled_transport, steps=20, itl=0.005)
    other, _ = run_of(other_transport, steps=20, itl=0.005)
    await asyncio.sleep(0.02)
    cancelled.future.cancel()
    written = len(cancelled_transport.frames)
    assert await asyncio.wait_for(other.future, 5) == RUN_DONE
    assert len(cancelled_transport.frames) == written
    assert len(other_transport.frames) == 19


async def test_a_failing_step_fails_its_own_run_only() -> None:
    loop = asyncio.get_running_loop()
    broken_transport, other_transport = Transport(loop), Transport(loop)
    broken, _ = run_of(broken_transport, steps=5, itl=0.002)

    def fail(data: bytes) -> None:
        raise RuntimeError("socket exploded")

    broken_transport.write = fail  # type: ignore[method-assign]
    other, _ = run_of(other_transport, steps=5, itl=0.002)
    with pytest.raises(RuntimeError, match="socket exploded"):
        await asyncio.wait_for(broken.future, 5)
    assert await asyncio.wait_for(other.future, 5) == RUN_DONE
