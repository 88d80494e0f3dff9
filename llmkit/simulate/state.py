"""The state every simulate handler shares, under `STATE_KEY`: settings, source, cache, limits, counters."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from aiohttp import web

from llmkit.core.cache import Cache
from llmkit.core.limiter.memory import MemoryConcurrencyLimit, MemoryLimiter
from llmkit.settings import SimulateSettings
from llmkit.simulate.faults import FaultInjector
from llmkit.simulate.lengths import OutputLengths
from llmkit.simulate.metrics import RequestMetrics
from llmkit.simulate.ratelimit import ModelRateLimits, UsageMeter
from llmkit.simulate.scheduler import Scheduler
from llmkit.simulate.sources.base import Source


@dataclass
class SimulateStats:
    """Counters of this process, served under /stats."""

    requests: int = 0
    active_streams: int = 0
    in_flight: int = 0
    tokens_sent: int = 0
    prompt_tokens: int = 0
    rejected: int = 0
    disconnects: int = 0
    source_unavailable: int = 0
    finish_reasons: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0})


@dataclass
class SimulateState:
    """Everything the handlers share: settings, source, cache, the concurrency limit and counters."""

    settings: SimulateSettings
    source: Source
    cache: Cache
    limiter: MemoryLimiter
    limit: MemoryConcurrencyLimit
    rng: random.Random
    models: tuple[str, ...]
    faults: FaultInjector
    # Per-model RPM/TPM limits (None: off), checked in every model request's slot.
    rate_limits: ModelRateLimits | None = None
    # The x-ratelimit-* headers of OpenAI-shaped answers when no limit is configured (the limits add
    # their own headers, to every answer, when they are).
    meter: UsageMeter | None = None
    # The model-server scheduler (None: simulate.max_num_seqs 0, every request runs at once), and the
    # same when its time factor is above 1 (the latency model then asks it for the load factor).
    scheduler: Scheduler | None = None
    load: Scheduler | None = None
    # simulate.output_tokens (None: answers keep their own length).
    output_lengths: OutputLengths | None = None
    stats: SimulateStats = field(default_factory=SimulateStats)
    # The vLLM / GenAI timing histograms every model request's slot feeds (None: a bare state in tests).
    request_metrics: RequestMetrics | None = None
    started_at: int = field(default_factory=lambda: int(time.time()))
    # What Ollama's /api/tags lists, as Ollama names models ("name:tag"), with when each was modified (epoch
    # seconds): the ids of `models`, plus what /api/pull added, less what /api/delete removed. Per process,
    # like the counters.
    local_models: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.local_models = {ollama_name(m): self.started_at for m in self.models}


def ollama_name(model: str) -> str:
    """`model` as Ollama names it: with its tag, ":latest" when it has none."""
    return model if ":" in model else f"{model}:latest"


STATE_KEY = web.AppKey("llmkit_simulate_state", SimulateState)
