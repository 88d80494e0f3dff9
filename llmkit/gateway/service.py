"""The Gateway: response cache, coalescing of identical requests, the upstream slots, then the upstream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from llmkit.core import telemetry
from llmkit.core.auth import DEFAULT_TENANT
from llmkit.core.cache import cache_from_url
from llmkit.core.cache.base import Cache
from llmkit.core.http import ApiError
from llmkit.core.ids import fresh_hex
from llmkit.core.queue.memory import MemoryPriorityQueue
from llmkit.errors import BackendError, UpstreamError
from llmkit.gateway.calls import Outcome
from llmkit.gateway.chat import ChatRequest
from llmkit.gateway.conversations import Conversation, ConversationCache
from llmkit.gateway.flights import DONE, RUNNING, Flight, Ticket
from llmkit.gateway.metrics import CACHE_HITS, COALESCED, QUEUE_FULL, REQUESTS, TenantCounters
from llmkit.gateway.slots import UpstreamSlots
from llmkit.settings import Settings, public_values

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from llmkit.gateway.pool import UpstreamPool

log = logging.getLogger("llmkit.gateway")
RESPONSE_PREFIX = "gateway:resp:"
# Search answers (platform/documents/routes.py) share the cache under their own prefix.
SEARCH_PREFIX = "gateway:search:"
CONVERSATION_PREFIX = "gateway:conv:"
NEW_CONVERSATION_PREFIX = "gateway:conv:new:"


@dataclass(slots=True)
class Counters:
    """What this process did, for /stats, /metrics and the seed's batch_processor figures."""

    requests: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    upstream_calls: int = 0
    upstream_failures: int = 0
    cancelled_calls: int = 0
    rejected_full: int = 0


def sized_url(url: str, size_mb: float) -> str:
    """`url` with its memory budget set to `size_mb` (memory: max_size_mb, tiered: local_max_size_mb)."""
    if size_mb <= 0:
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        name = "max_size_mb"
    elif scheme.startswith("tiered+"):
        name = "local_max_size_mb"
    else:
        # Redis alone bounds memory with its own maxmemory setting.
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != name] + [(name, f"{size_mb:g}")]
    return urlunsplit(parts._replace(query=urlencode(query)))


class PrefixedCache:
    """A view of a cache whose keys all start with `prefix` (so clearing one view leaves the others)."""

    def __init__(self, cache: Cache, prefix: str) -> None:
        self.cache = cache
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        return await self.cache.get(self.prefix + key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Store `value` under `key`."""
        await self.cache.set(self.prefix + key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove `key`."""
        return await self.cache.delete(self.prefix + key)

    async def clear(self, prefix: str = "") -> int:
        """Remove this view's keys (starting with `prefix`)."""
        return await self.cache.clear(self.prefix + prefix)

    async def stats(self) -> dict[str, Any]:
        """The underlying cache's counters."""
        return await self.cache.stats()

    async def close(self) -> None:
        """Close the underlying cache."""
        await self.cache.close()


def encode_outcome(outcome: Outcome) -> bytes:
    """An answer as a cache value."""
    return orjson.dumps([outcome.content, outcome.model, outcome.finish_reason, outcome.usage])


def decode_outcome(raw: bytes) -> Outcome | None:
    """A cache value as an answer, or None when it is not one of ours."""
    try:
        content, model, finish_reason, usage = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    return Outcome(content, model, finish_reason, usage)


def conversation_cache(settings: Settings) -> ConversationCache:
    """The conversation cache in cache.url; in memory, new conversations get a budget of their own."""
    gw = settings.gateway
    url, ttl, budget = settings.cache.url, gw.conversation_ttl_s, gw.conversation_max_size_mb
    if urlsplit(url).scheme.lower() != "memory":
        # Redis bounds its memory itself (maxmemory) and tiered's local part holds only recent reads:
        # one cache, one set of connections.
        return ConversationCache(
            PrefixedCache(cache_from_url(sized_url(url, budget), default_ttl=ttl), CONVERSATION_PREFIX), ttl
        )
    share = gw.conversation_new_share
    kept = cache_from_url(sized_url(url, budget * (1 - share)), default_ttl=ttl)
    new = cache_from_url(sized_url(url, budget * share), default_ttl=ttl)
    return ConversationCache(
        PrefixedCache(kept, CONVERSATION_PREFIX), ttl, PrefixedCache(new, NEW_CONVERSATION_PREFIX)
    )


class Gateway:
    """Everything between a validated chat request and its answer, independent of HTTP."""

    def __init__(self, settings: Settings, pool: UpstreamPool) -> None:
        gw = settings.gateway
        self.settings = settings
        self.config = gw
        self.pool = pool
        self.cache_ttl = settings.cache.ttl
        self.cache: Cache | None = None
        # A view of the same cache (closed with it).
        self.search_cache: Cache | None = None
        if gw.cache_enabled:
            url = sized_url(settings.cache.url, gw.cache_max_size_mb)
            shared = cache_from_url(url, default_ttl=settings.cache.ttl)
            self.cache = PrefixedCache(shared, RESPONSE_PREFIX)
            self.search_cache = PrefixedCache(shared, SEARCH_PREFIX)
        self.conversations = conversation_cache(settings) if gw.conversation_enabled else None
        self.slots = UpstreamSlots(MemoryPriorityQueue("gateway", gw.max_queue_size), gw.max_concurrent)
        self.counters = Counters()
        # Registered beside the gateway (app.py); tenant labels only when telemetry.tenant_labels.
        self.tenants = TenantCounters(settings.telemetry.tenant_labels)
        self.flights: dict[str, Flight] = {}
        self.linger_s = gw.batch_timeout_ms / 1000
        self.started_at = time.time()

    # -- serving ------------------------------------------------------------------------------------------

    async def open(self, req: ChatRequest) -> Ticket:
        """A ticket for the answer: from the cache, joined to an identical call in flight, or a new call."""
        self.counters.requests += 1
        row = self.tenants.row(req.tenant_id)
        row[REQUESTS] += 1
        if req.use_cache and self.cache is not None:
            with telemetry.span("cache lookup"):
                cached = await self._cached(req.key)
                telemetry.set_attribute("llmkit.cache.hit", cached is not None)
            # On the request's span as well, where a trace list can filter by it.
            telemetry.set_attribute("llmkit.cache.hit", cached is not None)
            if cached is not None:
                self.counters.cache_hits += 1
                row[CACHE_HITS] += 1
                return Ticket(None, cached)
        flight = self.flights.get(req.key) if self.config.deduplication else None
        if flight is not None and self._joinable(flight, req):
            self.counters.coalesced += 1
            row[COALESCED] += 1
            ticket = flight.join(req.use_cache)
            ticket.joined = True
            telemetry.set_attribute("llmkit.coalesced", True)
            return ticket
        flight = Flight(fresh_hex(), req.key, req.call, req.priority)
        try:
            admission = await self.slots.enter(flight.id, req.priority)
        except ApiError:  # the queue is full (429)
            self.counters.rejected_full += 1
            row[QUEUE_FULL] += 1
            raise
        ticket = flight.join(req.use_cache)
        if self.config.deduplication:
            self.flights[req.key] = flight
        flight.task = asyncio.create_task(self._fly(flight, admission, req.tenant_id))
        return ticket

    def _joinable(self, flight: Flight, req: ChatRequest) -> bool:
        limit = self.config.batch_max_size
        if limit and flight.served >= limit:
            return False
        # A failed call is not an answer to share; a streamed request needs a streamed call's pieces
        # only while it runs (a finished call hands over every piece at once, which is fine).
        return flight.error is None and (flight.state != DONE or flight.outcome is not None)

    async def _cached(self, key: str) -> Outcome | None:
        assert self.cache is not None
        try:
            raw = await self.cache.get(key)
        except BackendError as exc:
            log.warning("response cache unavailable, asking the upstream: %s", exc)
            return None
        return None if raw is None else decode_outcome(raw)

    async def _fly(self, flight: Flight, admission: asyncio.Future[None] | None, tenant_id: str) -> None:
        """Wait for a slot, call the upstream, share the outcome, fill the cache, then linger."""
        try:
            if admission is not None:
                try:
                    with telemetry.span("queue wait"):
                        await admission
                except asyncio.CancelledError:
                    await self.slots.abandon(flight.id, admission)
                    raise
            await self._call(flight, tenant_id)
            if flight.store and flight.outcome is not None and self.cache is not None:
                await self._store(flight.key, flight.outcome)
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
        except asyncio.CancelledError:
            flight.finish(None, UpstreamError("the upstream call was cancelled: every listener left", 499))
        finally:
            if self.flights.get(flight.key) is flight:
                del self.flights[flight.key]

    async def _call(self, flight: Flight, tenant_id: str) -> None:
        flight.state = RUNNING
        self.counters.upstream_calls += 1
        start = time.monotonic()
        try:
            on_piece = flight.piece if flight.call.stream else None
            outcome = await self.pool.chat(flight.call, on_piece)
        except asyncio.CancelledError:
            self.counters.cancelled_calls += 1
            raise
        except Exception as exc:
            self.counters.upstream_failures += 1
            flight.finish(None, exc)
        else:
            self.slots.timer.observe(time.monotonic() - start)
            self.tenants.tokens(tenant_id, outcome.usage)
            flight.finish(outcome)
        finally:
            await self.slots.release()

    async def _store(self, key: str, outcome: Outcome) -> None:
        assert self.cache is not None
        try:
            await self.cache.set(key, encode_outcome(outcome), self.cache_ttl)
        except BackendError as exc:
            log.warning("response cache unavailable, answer not stored: %s", exc)

    # -- conversations ----------------------------------------------------------------------------------

    async def converse(
        self, conversation_id: str | None, messages: Any, tenant_id: str = DEFAULT_TENANT
    ) -> tuple[Conversation | None, Any]:
        """The conversation and the whole history (stored + new), or (None, messages) when off."""
        if self.conversations is None:
            return None, messages
        return await self.conversations.resolve(conversation_id, messages, tenant_id)

    async def remember(self, conversation: Conversation | None, messages: Any, answer: str) -> None:
        """Store a finished turn in the conversation cache."""
        if self.conversations is not None and conversation is not None:
            await self.conversations.remember(conversation, messages, answer)

    # -- operating ----------------------------------------------------------------------------------------

    async def clear(self, response: bool = True, conversation: bool = True) -> dict[str, int]:
        """Empty the response and/or the conversation cache; how many entries each lost."""
        removed = {}
        if response and self.cache is not None:
            removed["response_cache"] = await self.cache.clear()
        if conversation and self.conversations is not None:
            removed["conversation_cache"] = await self.conversations.clear()
        return removed

    @property
    def processing(self) -> int:
        """Upstream calls running now."""
        return self.slots.busy

    def public_config(self) -> dict[str, Any]:
        """The gateway settings, secrets masked."""
        return public_values(self.config)

    async def close(self) -> None:
        """Cancel calls in flight and close caches and upstreams."""
        tasks = [f.task for f in self.flights.values() if f.task is not None and not f.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.slots.queue.close()
        if self.cache is not None:
            await self.cache.close()
        if self.conversations is not None:
            await self.conversations.close()
        await self.pool.close()

    def collect(self) -> Iterator[Metric]:
        """Prometheus samples of the counters, the queue and the upstream breakers."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.counters
        for name, value, help_text in (
            ("requests", c.requests, "Chat requests served"),
            ("cache_hits", c.cache_hits, "Chat requests answered from the response cache"),
            ("coalesced", c.coalesced, "Chat requests that joined an identical upstream call"),
            ("upstream_calls", c.upstream_calls, "Upstream calls started"),
            ("upstream_failures", c.upstream_failures, "Upstream calls that failed after retries"),
            ("cancelled_calls", c.cancelled_calls, "Upstream calls cancelled because every listener left"),
            ("queue_rejected", c.rejected_full, "Requests refused with 429: the queue was full"),
        ):
            yield CounterMetricFamily(f"llmkit_gateway_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "llmkit_gateway_queue_length", "Calls waiting for a slot", value=self.slots.waiting
        )
        yield GaugeMetricFamily(
            "llmkit_gateway_upstream_busy", "Upstream calls running", value=self.slots.busy
        )
        yield GaugeMetricFamily(
            "llmkit_gateway_eta_ms", "Moving average of one upstream call", value=self.slots.timer.average_ms
        )
        breaker = GaugeMetricFamily(
            "llmkit_gateway_upstream_open",
            "1 while the upstream's circuit is not closed",
            labels=["upstream"],
        )
        attempts = CounterMetricFamily(
            "llmkit_gateway_upstream_attempts",
            "Upstream attempts by how they ended (rejected: refused by the open circuit)",
            labels=["upstream", "result"],
        )
        opened = CounterMetricFamily(
            "llmkit_gateway_breaker_opened", "Times the upstream's circuit opened", labels=["upstream"]
        )
        for row in self.pool.stats():
            url = str(row.get("url"))
            breaker.add_metric([url], 0.0 if row.get("breaker") == "closed" else 1.0)
            for result in ("succeeded", "failed", "permanent", "cancelled", "rejected"):
                attempts.add_metric([url, result], float(row.get(result) or 0))
            opened.add_metric([url], float(row.get("opened") or 0))
        yield from (breaker, attempts, opened)

    def describe(self) -> list[Metric]:
        """No samples at registration (the families are built on collect)."""
        return []
