"""`llmkit simulate`: the app factory of the OpenAI-compatible fake LLM server."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from llmkit.core.auth import Guard, refuse_open_bind
from llmkit.core.cache import cache_from_url
from llmkit.core.http import (
    METRICS_KEY,
    OPENAPI_SCHEMAS_KEY,
    ApiError,
    StatsProvider,
    add_route,
    create_base_app,
    json_response,
    openai_error_body,
    openapi,
    read_body,
    request_id_of,
    set_error_format,
    stream_response,
)
from llmkit.core.limiter.memory import MemoryLimiter
from llmkit.settings import Settings, SimulateSettings
from llmkit.simulate import anthropic, completions, embeddings, faults, ollama, ratelimit, responses
from llmkit.simulate.faults import STREAM_FAULT_KEY, FaultInjector, rates_from_settings
from llmkit.simulate.instant import instant_chat_events
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.lengths import output_lengths, want_of
from llmkit.simulate.logprobs import answer_logprobs, logprob_sender
from llmkit.simulate.metrics import RequestMetrics, count_generated, mark_first_token
from llmkit.simulate.openai import (
    TEST_COMPLETION,
    Answer,
    ChatRequest,
    ChunkWriter,
    chat_request_from_body,
    completion_json,
    shape_answer,
    stream_head,
    tool_call_pieces,
)
from llmkit.simulate.openapi import CHAT_DOC, MODEL_DOC, SCHEMAS, TEST_COMPLETION_DOC
from llmkit.simulate.reply import (
    answer_mode_for,
    limit_headers,
    pick_answer,
    run_stream,
    sse_headers,
    wait_or_gone,
)
from llmkit.simulate.scheduler import Scheduler, SchedulerCollector
from llmkit.simulate.slot import RequestSlot
from llmkit.simulate.sources.base import Source
from llmkit.simulate.state import STATE_KEY, SimulateState
from llmkit.simulate.stream import (
    INSTANT_CHUNK_TOKENS,
    PrebuiltStream,
    Sender,
    StreamPlan,
    StreamSender,
    plan_pieces,
)
from llmkit.simulate.tool_calls import rate_for

log = logging.getLogger("llmkit.simulate")

# What a 403 from /admin/* and the refusal to bind beyond loopback tell the operator to set.
ADMIN_SETTING = "simulate.admin_key"
ADMIN_ENV = "LLMKIT_SIMULATE_ADMIN_KEY"


def admin_guard(sim: SimulateSettings) -> Guard:
    """The simulator's credential rules: /admin/* needs simulate.admin_key; model routes take any key."""
    return Guard(admin_key=sim.admin_key, admin_setting=f"{ADMIN_SETTING} (env {ADMIN_ENV})")


def refuse_open_admin(settings: Settings) -> None:
    """ConfigError (exit 2) when server.host is beyond loopback and no simulate.admin_key is set."""
    refuse_open_bind(settings.server.host, bool(settings.simulate.admin_key), ADMIN_SETTING, ADMIN_ENV)


def model_ids(settings: SimulateSettings) -> tuple[str, ...]:
    """The ids GET /v1/models lists: settings.models, with the default model first if it is missing."""
    ids = [m.strip() for m in settings.models.split(",") if m.strip()]
    if settings.model not in ids:
        ids.insert(0, settings.model)
    return tuple(ids)


@openapi(**CHAT_DOC)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI chat completions, answered from the source on the latency model.

    Headers x-llmkit-ttft-ms and x-llmkit-itl-ms override the configured delays for one request.
    """
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    chat, prompt_tokens = chat_request_from_body(await read_body(request))
    # `async with request_slot(...)` spelled out: the common case then takes its slot without a coroutine.
    slot = RequestSlot(state, request, in_stream=chat.stream)
    if not slot.take_now():
        await slot.take()
    try:
        return await _answer(request, state, chat, prompt_tokens, latency)
    finally:
        slot.give_back()


async def _answer(
    request: web.Request, state: SimulateState, chat: ChatRequest, prompt_tokens: int, latency: Latency
) -> web.StreamResponse:
    stats = state.stats
    mode = answer_mode_for(request.headers, state.settings)
    text, rng = await pick_answer(state, chat.prompt, mode, chat.seed)
    rate = rate_for(request.headers, state.settings.tool_call_rate) if chat.tools else 1.0
    lorem = mode == "lorem"
    want = want_of(chat.max_tokens, chat.ignore_eos, chat.min_tokens, state.output_lengths, lorem, rng)
    answer = shape_answer(chat, text, rng, rate, want)
    tokens, finish_reason = answer.tokens, answer.finish_reason
    stats.prompt_tokens += prompt_tokens
    stats.finish_reasons[finish_reason] = stats.finish_reasons.get(finish_reason, 0) + chat.n
    if state.settings.tracking:
        log.info(
            "request %s: prompt %.80r -> answer of %d tokens (%s, n=%d, stream=%s)",
            request_id_of(request),
            chat.prompt,
            len(tokens),
            finish_reason,
            chat.n,
            chat.stream,
        )
    if chat.stream:
        return await _stream(request, state, chat, latency, rng, answer, prompt_tokens)
    if not latency.instant and not await wait_or_gone(request, state, latency.whole_answer(len(tokens), rng)):
        return web.Response(status=499)
    stats.tokens_sent += len(tokens) * chat.n
    count_generated(request, len(tokens) * chat.n)
    logprobs = answer_logprobs(chat, answer, rng) if chat.logprobs else None
    body = completion_json(
        chat.model,
        answer.content,
        finish_reason,
        chat.n,
        prompt_tokens,
        len(tokens),
        answer.tool_calls,
        logprobs,
    )
    headers = limit_headers(state, chat.model, prompt_tokens + (chat.max_tokens or 0))
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _stream(
    request: web.Request,
    state: SimulateState,
    chat: ChatRequest,
    latency: Latency,
    rng: random.Random,
    answer: Answer,
    prompt_tokens: int,
) -> web.StreamResponse:
    tokens, finish_reason, calls = answer.tokens, answer.finish_reason, answer.tool_calls
    with_usage = chat.include_usage or state.settings.usage_chunk == "always"
    usage = (prompt_tokens, len(tokens) * chat.n) if with_usage else None
    response = stream_response(
        request, sse_headers(state, chat.model, prompt_tokens + (chat.max_tokens or 0))
    )
    capacity = state.settings.channel_capacity
    sender: Sender
    if latency.instant and not calls and not chat.logprobs and request.get(STREAM_FAULT_KEY) is None:
        # Nothing to wait for and nothing random: the events are known, only the head is new.
        events = instant_chat_events(tokens, chat.n, finish_reason, usage)
        sender = PrebuiltStream(response, stream_head(chat.model), events, len(tokens) * chat.n, capacity)
        # Nothing waits before the first token: it goes out with the headers.
        mark_first_token(request)
    else:
        writer = ChunkWriter(chat.model, chat.n, calls)
        # One token per event when tokens arrive one by one; a few per event when nothing waits between.
        per_chunk = 1 if latency.itl > 0 else INSTANT_CHUNK_TOKENS
        if calls:
            pieces, counts = tool_call_pieces(calls, tokens, answer.call_tokens, per_chunk)
        else:
            pieces, counts = plan_pieces(tokens, per_chunk)
        usage_event = writer.usage(*usage) if usage is not None else None
        plan = StreamPlan(pieces, counts, chat.n, finish_reason, usage_event)
        if chat.logprobs:
            sender = logprob_sender(request, response, writer, plan, capacity, chat, answer, rng)
        else:
            sender = StreamSender(request, response, writer, plan, capacity)
    return await run_stream(request, state, sender, latency, rng)


@openapi(**TEST_COMPLETION_DOC)
async def test_completion(request: web.Request) -> web.Response:
    """The seed's fixed connectivity answer: proves a client reaches the simulator."""
    return json_response(TEST_COMPLETION)


def _model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "llmkit"}


@openapi(tags=["openai"])
async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list: the ids of simulate.models."""
    state = request.app[STATE_KEY]
    data = [_model_object(m, state.started_at) for m in state.models]
    return json_response({"object": "list", "data": data})


@openapi(**MODEL_DOC)
async def retrieve_model(request: web.Request) -> web.Response:
    """One model of the list; 404 for an id the simulator does not list."""
    state = request.app[STATE_KEY]
    model_id = request.match_info["model_id"]
    if model_id not in state.models:
        raise ApiError(
            404,
            "model_not_found",
            f"the model {model_id!r} does not exist; GET /v1/models lists {', '.join(state.models)}",
            param="model",
        )
    return json_response(_model_object(model_id, state.started_at))


def _make_stats(state: SimulateState) -> StatsProvider:
    async def stats() -> dict[str, Any]:
        counters = state.stats
        limit = await state.limit.stats()
        return {
            "requests": counters.requests,
            "active_streams": counters.active_streams,
            "in_flight": counters.in_flight,
            "tokens_sent": counters.tokens_sent,
            "prompt_tokens": counters.prompt_tokens,
            "answers": dict(counters.finish_reasons),
            "rejected": counters.rejected,
            "disconnects": counters.disconnects,
            "source_unavailable": counters.source_unavailable,
            "limit": {"size": limit.limit, "in_use": limit.in_use, "waiting": limit.waiting},
            "source": {"name": state.source.name, **state.source.stats()},
            "cache": await state.cache.stats(),
            "faults": dict(state.faults.injected),
            "scheduler": _scheduler_stats(state),
        }

    return stats


def _scheduler_counts(state: SimulateState) -> tuple[int, int]:
    # Without a scheduler every request in flight runs and none waits for a seat.
    scheduler = state.scheduler
    return (state.stats.in_flight, 0) if scheduler is None else (scheduler.running, scheduler.waiting)


def _scheduler_stats(state: SimulateState) -> dict[str, Any]:
    scheduler = state.scheduler
    if scheduler is not None:
        return scheduler.stats()
    running, waiting = _scheduler_counts(state)
    return {"max_num_seqs": 0, "max_waiting": 0, "running": running, "waiting": waiting}


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE_KEY]
    try:
        await state.source.start()
        yield
    finally:
        try:
            await state.source.close()
        finally:
            await state.limiter.close()
            await state.cache.close()


def create_app(settings: Settings, source: Source | None = None) -> web.Application:
    """The simulator: OpenAI chat completions, models, /test_completion, plus /health /stats /metrics."""
    sim = settings.simulate
    cache = cache_from_url(settings.cache.url, default_ttl=settings.cache.ttl)
    if source is None:
        # Imported here: the sources pull in their drivers, and tests pass their own source.
        from llmkit.simulate.sources import source_from_settings

        source = source_from_settings(settings, cache)
    # The seed's semaphore is per process; a memory limit keeps it so (each worker has its own).
    limiter = MemoryLimiter()
    state = SimulateState(
        settings=sim,
        source=source,
        cache=cache,
        limiter=limiter,
        limit=limiter.concurrency_limit("simulate", sim.semaphore_limit),
        rng=random.Random(sim.seed or None),
        models=model_ids(sim),
        faults=FaultInjector(
            rates_from_settings(sim),
            sim.fault_timeout_s,
            sim.fault_retry_after,
            rng=random.Random(sim.seed or None),
        ),
    )
    if sim.max_num_seqs > 0:
        state.scheduler = Scheduler(sim.max_num_seqs, sim.max_waiting, sim.time_factor_under_load, 1.0)
        state.load = state.scheduler if sim.time_factor_under_load > 1 else None
    state.output_lengths = output_lengths(sim)
    app = create_base_app("simulate", settings.server, stats=_make_stats(state), guard=admin_guard(sim))
    app[METRICS_KEY].registry.register(SchedulerCollector(sim.model, lambda: _scheduler_counts(state)))
    state.request_metrics = RequestMetrics(
        sim.model, lambda: (state.stats.prompt_tokens, state.stats.tokens_sent)
    )
    app[METRICS_KEY].registry.register(state.request_metrics)
    app[STATE_KEY] = state
    app[OPENAPI_SCHEMAS_KEY].update(SCHEMAS)
    faults.add_routes(app, state.faults)
    state.rate_limits = ratelimit.install(app, sim.rpm, sim.tpm, settings.limiter.url)
    state.meter = ratelimit.UsageMeter() if state.rate_limits is None else None
    set_error_format(app, openai_error_body, "/v1")
    set_error_format(app, openai_error_body, "/test_completion")
    app.cleanup_ctx.append(_lifecycle)
    add_route(app, "POST", "/v1/chat/completions", chat_completions)
    add_route(app, "POST", "/test_completion", test_completion)
    add_route(app, "GET", "/v1/models", list_models)
    add_route(app, "GET", "/v1/models/{model_id}", retrieve_model)
    completions.add_routes(app)
    embeddings.add_routes(app)
    # Other API shapes register their routes below, one line each.
    ollama.add_routes(app)
    anthropic.add_routes(app)
    responses.add_routes(app)
    return app
