"""What every model route does to reply: pick the source's answer, wait out its generation, stream it."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping

from aiohttp import web
from multidict import istr

from llmkit.core.http import ApiError
from llmkit.settings import SimulateSettings
from llmkit.simulate.latency import Latency
from llmkit.simulate.lengths import lorem_text
from llmkit.simulate.metrics import count_generated
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


def limit_headers(state: SimulateState, model: str, cost: int) -> dict[str, str] | None:
    """The x-ratelimit-* headers of an OpenAI-shaped answer for `model` that may cost `cost` tokens when
    no limit is configured (the limits add their own when one is); None then."""
    meter = state.meter
    return None if meter is None else meter.headers(model, cost)


def sse_headers(state: SimulateState, model: str, cost: int) -> Mapping[str, str]:
    """SSE_HEADERS, with the x-ratelimit-* headers of `limit_headers` when there are any."""
    limits = limit_headers(state, model, cost)
    return SSE_HEADERS if limits is None else {**SSE_HEADERS, **limits}


ANSWER_MODES = ("match", "echo", "random", "lorem")
ANSWER_MODE_HEADER = istr("x-llmkit-answer-mode")
_SEED_BITS = (1 << 64) - 1


def answer_mode_for(headers: Mapping[str, str], settings: SimulateSettings) -> str:
    """simulate.answer_mode, or the request's x-llmkit-answer-mode header (400 when it names no mode)."""
    raw = headers.get(ANSWER_MODE_HEADER)
    if raw is None:
        return settings.answer_mode
    mode = raw.strip().lower()
    if mode not in ANSWER_MODES:
        raise ApiError(
            400,
            "invalid_header",
            f"header {ANSWER_MODE_HEADER} must be one of {', '.join(ANSWER_MODES)}; got {raw!r}",
            param=str(ANSWER_MODE_HEADER),
        )
    return mode


def _prompt_seed(salt: int, prompt: str) -> int:
    # crc32, not hash(): the same in every process and every run, so workers and replicas agree.
    return (salt & _SEED_BITS) << 32 | zlib.crc32(prompt.encode("utf-8", "surrogatepass"))


async def pick_answer(
    state: SimulateState, prompt: str, mode: str | None = None, seed: int | None = None
) -> tuple[str, random.Random]:
    """The answer for `prompt` in answer mode `mode` (None: simulate.answer_mode) and the request's own
    rng (fixed by the request's `seed` when it has one); 503 when the source is unavailable."""
    if mode is None:
        mode = state.settings.answer_mode
    if seed is None:
        # Seeded from the shared rng in arrival order (so simulate.seed repeats answers), but only when used.
        rng = RequestRandom(state.rng.getrandbits(64))
    else:
        rng = RequestRandom(_prompt_seed(seed, prompt))
    if mode == "echo":
        return prompt, rng
    if mode == "lorem":
        return lorem_text(rng), rng
    # match: an unmatched prompt's answer is drawn from the prompt itself, so it is the same every time.
    choice = rng if mode == "random" else RequestRandom(_prompt_seed(seed or state.settings.seed, prompt))
    try:
        return await state.source.answer(prompt, choice), rng
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
        count_generated(request, sender.progress.tokens)
    return response
