"""What every model route does to reply: pick the source's answer, wait out its generation, stream it."""

from __future__ import annotations

import random

from aiohttp import web

from llmkit.core.http import ApiError
from llmkit.simulate.latency import Latency
from llmkit.simulate.rng import RequestRandom
from llmkit.simulate.sources.base import SourceUnavailable
from llmkit.simulate.state import SimulateState
from llmkit.simulate.stream import Sender, pause

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # Tells nginx-style proxies not to hold events back.
    "X-Accel-Buffering": "no",
}


async def pick_answer(state: SimulateState, prompt: str) -> tuple[str, random.Random]:
    """The source's answer for `prompt` and the request's own rng; 503 when the source is unavailable."""
    # Seeded from the shared rng in arrival order (so simulate.seed repeats answers), but only when used.
    rng = RequestRandom(state.rng.getrandbits(64))
    try:
        return await state.source.answer(prompt, rng), rng
    except SourceUnavailable as exc:
        state.stats.source_unavailable += 1
        raise ApiError(
            503,
            "service_unavailable",
            f"the answer source ({state.source.name}) is unavailable: {exc}; retry later",
            headers={"Retry-After": "1"},
            type="service_unavailable",
        ) from None


async def wait_or_gone(request: web.Request, state: SimulateState, seconds: float) -> bool:
    """Sleep the simulated generation time; False (counted as a disconnect) if the client left meanwhile."""
    try:
        await pause(request, seconds)
    except ConnectionResetError:
        state.stats.disconnects += 1
        return False
    return True


async def run_stream(
    request: web.Request, state: SimulateState, sender: Sender, latency: Latency, rng: random.Random
) -> web.StreamResponse:
    """Prepare the SSE response and send the planned stream, keeping the stream counters right."""
    stats = state.stats
    response = sender.response
    stats.active_streams += 1
    try:
        await response.prepare(request)
        await sender.send(latency, rng)
        await response.write_eof()
    except ConnectionResetError:
        # The client went away: stop here; aiohttp closes the connection quietly.
        stats.disconnects += 1
    finally:
        stats.active_streams -= 1
        stats.tokens_sent += sender.progress.tokens
    return response
