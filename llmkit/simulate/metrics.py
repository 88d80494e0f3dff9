"""What load testers read from vLLM's /metrics, from the simulator's real per-request timings.

A model request's slot (slot.py) starts a RequestTiming; the stream code marks its first token and counts
what it generated; giving the slot back observes the request's end-to-end latency, time to first token
and time per output token. Dict and float updates on the request path, families built at scrape time
(as core.http_metrics does). The same timings are served under vLLM's `vllm:*` names and OpenTelemetry's
GenAI server names (`gen_ai.server.*` as Prometheus spells them: dots become underscores, the unit a
suffix).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from llmkit.core.http import request_key
from llmkit.core.http_metrics import histogram_buckets, new_latency, observe_latency

# vLLM's buckets (vllm/v1/metrics/loggers.py), which are also OpenTelemetry's advice for the GenAI ones.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)

# (vLLM name, GenAI name, help, buckets) of each histogram, in RequestMetrics' order.
HISTOGRAMS = (
    (
        "vllm:time_to_first_token_seconds",
        "gen_ai_server_time_to_first_token_seconds",
        "Time to first token (streamed requests).",
        TTFT_BUCKETS,
    ),
    (
        "vllm:time_per_output_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
        "Time per output token after the first (streamed requests).",
        TPOT_BUCKETS,
    ),
    (
        "vllm:e2e_request_latency_seconds",
        "gen_ai_server_request_duration_seconds",
        "End-to-end request latency, from taking a slot to giving it back.",
        E2E_BUCKETS,
    ),
)


class RequestTiming:
    """One model request's clock: when it started, when its first token went out, tokens generated."""

    __slots__ = ("first", "started", "tokens")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first = 0.0  # 0: no token streamed (an answer sent whole, an error)
        self.tokens = 0


TIMING_KEY = request_key("llmkit_simulate_timing", RequestTiming)


def mark_first_token(request: web.Request) -> None:
    """The request's first token is going out now."""
    timing = request.get(TIMING_KEY)
    if timing is not None and not timing.first:
        timing.first = time.perf_counter()


def count_generated(request: web.Request, tokens: int) -> None:
    """The request generated `tokens` more tokens."""
    timing = request.get(TIMING_KEY)
    if timing is not None:
        timing.tokens += tokens


class RequestMetrics:
    """A collector for the simulator's registry: `finish` each model request's timing."""

    def __init__(self, model: str, tokens: Callable[[], tuple[int, int]]) -> None:
        # tokens() -> (prompt, generation) tokens so far: the /stats counters, read at scrape time.
        self.model = model
        self.tokens = tokens
        self.ttft = new_latency(TTFT_BUCKETS)
        self.tpot = new_latency(TPOT_BUCKETS)
        self.e2e = new_latency(E2E_BUCKETS)

    def finish(self, timing: RequestTiming) -> None:
        """Observe a request that gave its slot back just now."""
        now = time.perf_counter()
        observe_latency(self.e2e, now - timing.started, E2E_BUCKETS)
        first = timing.first
        if first:
            observe_latency(self.ttft, first - timing.started, TTFT_BUCKETS)
            if timing.tokens > 1:
                observe_latency(self.tpot, (now - first) / (timing.tokens - 1), TPOT_BUCKETS)

    def describe(self) -> list[Any]:
        """No samples at registration (the families are built on collect)."""
        return []

    def collect(self) -> Iterator[Any]:
        """vLLM's histograms and token counters, then the GenAI histograms of the same timings."""
        labels, values = ["model_name"], [self.model]
        genai_labels = ["gen_ai_operation_name", "gen_ai_request_model"]
        genai_values = ["chat", self.model]
        counts = (self.ttft, self.tpot, self.e2e)
        for (name, genai, doc, bounds), observed in zip(HISTOGRAMS, counts, strict=True):
            buckets = histogram_buckets(observed, bounds)
            family = HistogramMetricFamily(name, doc, labels=labels)
            family.add_metric(values, buckets, observed[-1])
            yield family
            family = HistogramMetricFamily(genai, doc, labels=genai_labels)
            family.add_metric(genai_values, buckets, observed[-1])
            yield family
        prompt, generation = self.tokens()
        for name, value, doc in (
            ("vllm:prompt_tokens", prompt, "Number of prefill tokens processed."),
            ("vllm:generation_tokens", generation, "Number of generation tokens processed."),
        ):
            counter = CounterMetricFamily(name, doc, labels=labels)
            counter.add_metric(values, value)
            yield counter
