"""Per-tenant quotas on the core quota counter: rpm, tpm, requests in flight, tokens per UTC day and month."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from math import ceil
from typing import TYPE_CHECKING, Protocol

from multidict import CIMultiDict, istr

from llmkit.core.backends import BackendURL, parse_backend_url
from llmkit.core.limiter.base import (
    QuotaCounter,
    SlotUnavailable,
    Window,
    WindowState,
    check_amount,
    window_state,
)
from llmkit.core.limiter.quota_memory import Cell, Live, MemoryQuotaCounter
from llmkit.errors import ConfigError, RateLimited
from llmkit.platform.quota_types import Quotas

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from llmkit.core.limiter.redis import RedisConcurrencyLimit


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one counted quota maps to a window: its name (also the header suffix), period and unit."""

    quota: str
    window: str
    period: str
    unit: str


# Window names double as OpenAI's header suffixes: x-ratelimit-remaining-requests, -tokens, -tokens-day, ...
RPM = _Kind("rpm", "requests", "minute", "requests per minute")
TOKEN_KINDS = (
    _Kind("tpm", "tokens", "minute", "tokens per minute"),
    _Kind("daily_tokens", "tokens-day", "day", "tokens per day (UTC)"),
    _Kind("monthly_tokens", "tokens-month", "month", "tokens per month (UTC)"),
)
_BY_WINDOW = {kind.window: kind for kind in (RPM, *TOKEN_KINDS)}
# Distinct quota sets whose windows are kept built (more: the cache starts over).
PLANS_MAX = 10_000


class QuotaExceeded(RateLimited):
    """A tenant reached one of its quotas; the answer is a 429 with Retry-After and x-ratelimit-* headers."""

    status = 429

    def __init__(
        self, message: str, *, tenant_id: str, quota: str, retry_after: float, headers: dict[str, str]
    ) -> None:
        super().__init__(message, retry_after=retry_after, remaining=0)
        self.tenant_id = tenant_id
        self.quota = quota
        self.headers = headers
        # OpenAI's code and type for a rate limit, so its clients read it as one; `quota` says which.
        self.code = "rate_limit_exceeded"
        self.extra = {"type": "tokens" if "tokens" in quota or quota == "tpm" else "requests", "quota": quota}


class TenantSlots(Protocol):
    """Requests in flight per tenant, the limit given on each call; taking never waits."""

    async def try_take(self, tenant_id: str, limit: int) -> str | None:
        """A holder id if the tenant holds fewer than `limit` slots, else None."""
        ...

    async def give_back(self, tenant_id: str, holder: str) -> None:
        """Free the slot of `holder`; giving back twice is harmless."""
        ...

    async def in_use(self, tenant_id: str) -> int:
        """Slots the tenant holds (in every process sharing the store)."""
        ...

    async def close(self) -> None:
        """Give back the slots this process holds and stop background work."""
        ...


class MemoryTenantSlots:
    """Slots per tenant in this process: a set of holder ids each."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._ids = itertools.count(1)

    async def try_take(self, tenant_id: str, limit: int) -> str | None:
        """A holder id if the tenant holds fewer than `limit` slots, else None."""
        held = self._held.setdefault(tenant_id, set())
        if len(held) >= limit:
            return None
        holder = str(next(self._ids))
        held.add(holder)
        return holder

    async def give_back(self, tenant_id: str, holder: str) -> None:
        """Free the slot of `holder`; giving back twice is harmless."""
        held = self._held.get(tenant_id)
        if held is not None:
            held.discard(holder)
            if not held:
                del self._held[tenant_id]  # idle tenants cost nothing

    async def in_use(self, tenant_id: str) -> int:
        """Slots the tenant holds."""
        return len(self._held.get(tenant_id, ()))

    async def close(self) -> None:
        """Nothing to release; present for the TenantSlots protocol."""


class RedisTenantSlots:
    """Slots per tenant shared through Redis: one RedisConcurrencyLimit (leased holders) per tenant."""

    def __init__(self, client: aioredis.Redis, prefix: str = "llmkit", lease: float = 30.0) -> None:
        self._client = client
        self._prefix = prefix
        self._lease = lease
        self._limits: dict[str, RedisConcurrencyLimit] = {}  # each tenant's limit at its current size
        self._owners: dict[str, RedisConcurrencyLimit] = {}  # holder -> the limit object renewing its lease

    async def try_take(self, tenant_id: str, limit: int) -> str | None:
        """A holder id if the tenant holds fewer than `limit` slots everywhere, else None."""
        current = self._limits.get(tenant_id)
        if current is None or current.limit != limit:
            # The holders stay in the tenant's one Redis set, so a resized limit counts every slot taken
            # before; the old object keeps renewing its holders until they are given back, then is dropped.
            current = self._limits[tenant_id] = self._limit(tenant_id, limit)
        try:
            holder = await current.acquire(timeout=0)
        except SlotUnavailable:
            return None
        self._owners[holder] = current
        return holder

    async def give_back(self, tenant_id: str, holder: str) -> None:
        """Free the slot of `holder`; giving back twice is harmless."""
        owner = self._owners.pop(holder, None)
        if owner is not None:
            await owner.release(holder)

    async def in_use(self, tenant_id: str) -> int:
        """Slots the tenant holds in every process (expired leases not counted)."""
        current = self._limits.get(tenant_id) or self._limit(tenant_id, 1)
        return await current.in_use()

    async def close(self) -> None:
        """Give back the slots this process holds and stop renewing their leases."""
        for limit in {id(x): x for x in (*self._limits.values(), *self._owners.values())}.values():
            await limit.close()
        self._limits.clear()
        self._owners.clear()

    def _limit(self, tenant_id: str, limit: int) -> RedisConcurrencyLimit:
        from llmkit.core.limiter.redis import RedisConcurrencyLimit

        return RedisConcurrencyLimit(self._client, f"quota:{tenant_id}", limit, self._prefix, self._lease)


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration, the way OpenAI writes x-ratelimit-reset-*: "20ms", "1s", "6m0s", "1h2m3s"."""
    # Rounded up to the millisecond: a client waiting that long never arrives before the reset.
    ms = math.ceil(seconds * 1000 - 1e-6)
    return _DURATIONS.get(ms) or _go_ms(ms)


def _go_ms(ms: int) -> str:
    text = _DURATIONS.get(ms)
    if text is not None:
        return text
    if ms < 1000:
        text = f"{ms}ms" if ms > 0 else "0s"
    else:
        whole, frac = divmod(ms, 1000)
        secs = f"{whole % 60}.{frac:03d}".rstrip("0") if frac else str(whole % 60)
        if whole < 60:
            text = f"{secs}s"
        else:
            hours, minutes = divmod(whole // 60, 60)
            text = f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"
    if len(_DURATIONS) >= DURATIONS_MAX:
        _DURATIONS.clear()
    _DURATIONS[ms] = text
    return text


# Every answer carries a reset; the durations written lately, by millisecond. Kept small: the milliseconds
# to a reset differ from one answer to the next, so a large memo (it was 120,000) mostly grew, to ~60,000
# entries a minute scattered over memory, and a gateway serving a tenant with quotas got ~1% slower over
# its first minutes of load (measured side by side); past 2,048 it starts over (a miss is ~0.5 us).
_DURATIONS: dict[int, str] = {}
DURATIONS_MAX = 2_048


class QuotaPlan:
    """What one set of quotas counts, built once per set: its windows in header order (requests, then
    tokens per minute, day, month) and, for each, its header names and limit text."""

    __slots__ = (
        "quotas",
        "rpm",
        "tokens",
        "windows",
        "limits",
        "limit_headers",
        "names",
        "concurrent",
        "template",
    )

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self.concurrent = quotas.max_concurrent
        self.rpm = [Window(RPM.window, quotas.rpm, RPM.period)] if quotas.rpm is not None else []
        self.tokens = [
            Window(kind.window, limit, kind.period)
            for kind in TOKEN_KINDS
            if (limit := getattr(quotas, kind.quota)) is not None
        ]
        self.windows = [*self.rpm, *self.tokens]
        self.limits = [w.limit for w in self.windows]
        # The headers that never change (x-ratelimit-limit-*), copied into each answer's headers, then
        # (limit, remaining header, reset header) per window: x-ratelimit-*-<window name>.
        # Names are multidict istr: the response's header map then need not fold each one's case.
        self.limit_headers: dict[str, str] = {
            istr(f"x-ratelimit-limit-{w.name}"): str(w.limit) for w in self.windows
        }
        if quotas.max_concurrent is not None:
            self.limit_headers[istr("x-ratelimit-limit-concurrent")] = str(quotas.max_concurrent)
        self.names = [
            (w.limit, istr(f"x-ratelimit-remaining-{w.name}"), istr(f"x-ratelimit-reset-{w.name}"))
            for w in self.windows
        ]
        # Every header of an answer in the order it carries them, the counted ones still empty: a copy
        # of it is filled in place (no insertions). A CIMultiDict, the response's own header map: aiohttp
        # copies one of those as a block, where a dict's items would each be added and checked.
        template = self.limit_headers.copy()
        for _, remaining_name, reset_name in self.names:
            template[remaining_name] = template[reset_name] = ""
        if quotas.max_concurrent is not None:
            template[REMAINING_CONCURRENT] = ""
        self.template: CIMultiDict[str] = CIMultiDict(template)


REMAINING_CONCURRENT = istr("x-ratelimit-remaining-concurrent")


class Counted(Protocol):
    """What headers read of a window: units used and when it resets (a WindowState, a live Cell)."""

    @property
    def used(self) -> int: ...

    @property
    def reset_at(self) -> float: ...


def quota_headers(plan: QuotaPlan, states: Sequence[Counted], in_use: int, now: float) -> CIMultiDict[str]:
    """x-ratelimit-* headers for the plan's windows (`states` in the plan's order) and the requests in
    flight (`in_use` of max_concurrent)."""
    names = plan.names
    if len(states) == len(names):
        headers = plan.template.copy()
    else:  # never from this module's callers; headers of the windows given, as zip would pair them
        headers = CIMultiDict(plan.limit_headers)
        names = names[: len(states)]
    reset_at, reset = -1.0, ""
    i = 0
    # Indexed, not zipped: zip(..., strict=False) parses its keyword on every call, a measurable share
    # of this function, which every answer comes through.
    for limit, remaining_name, reset_name in names:
        state = states[i]
        i += 1
        used = state.used
        headers[remaining_name] = str(limit - used) if used < limit else "0"
        if state.reset_at != reset_at:  # requests and tokens per minute share their reset
            reset_at = state.reset_at
            # go_duration, its cache looked up here.
            ms = ceil((reset_at - now) * 1000 - 1e-6)
            reset = _DURATIONS.get(ms) or _go_ms(ms)
        headers[reset_name] = reset
    concurrent = plan.concurrent
    if concurrent is not None:
        headers[REMAINING_CONCURRENT] = str(max(0, concurrent - in_use))
    return headers


class Admission:
    """A request let in: its headers now, and `settle(tokens)` once the answer is out.

    Counted in this process (`live`: the counter's cells), it reads the tenant's counts as they are when
    asked for headers and adds its tokens to the windows current when it settles; counted elsewhere
    (Redis), it keeps the states the counter answered. `settled` (read it, never set it) tells whether
    settle() or settle_now() was called: its tokens are counted, its slot given back."""

    __slots__ = (
        "tenant_id",
        "plan",
        "settled",
        "_enforcer",
        "_local",
        "_states",
        "_holder",
        "_in_use",
        "_live",
    )

    def __init__(
        self,
        enforcer: QuotaEnforcer,
        tenant_id: str,
        plan: QuotaPlan,
        states: list[WindowState] | None,
        holder: str | None,
        in_use: int,
        live: Live | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.plan = plan
        self.settled = False
        self._enforcer = enforcer
        # The counter's cells are read here only when it counts in this process.
        self._local = enforcer.local if live is not None else None
        self._states = states  # in the plan's order: the token windows' states are the last ones
        self._holder = holder
        self._in_use = in_use
        self._live = live

    def _begin_settle(self, tokens: int) -> bool:
        """Check `tokens` and mark the admission settled; False when it already was."""
        if self.settled:
            return False
        if type(tokens) is not int or tokens < 0:
            check_amount(tokens, "tokens")
        self.settled = True  # set before any await, so two concurrent settles count once
        return True

    def _count_here(self, local: MemoryQuotaCounter, tokens: int) -> tuple[list[Cell], float]:
        """Add `tokens` to the token windows current now (an answer that outlived its minute counts in
        the next one); the cells and the time they were read at."""
        now = local.clock()
        live = self._live
        assert live is not None
        if now >= live[2]:  # a window reset since: the cells of the windows current now
            plan = self.plan
            live = self._live = local.live_cells(self.tenant_id, plan.rpm, plan.tokens)
        cells = live[3]
        if tokens:
            first = len(self.plan.rpm)
            if len(cells) > first:
                for cell in cells[first:]:
                    cell.used += tokens
        return cells, now

    def headers(self) -> CIMultiDict[str]:
        """x-ratelimit-* headers of the tenant's quotas (token counts include a settled answer)."""
        local = self._local
        if local is not None:
            cells, now = self._count_here(local, 0)
            return quota_headers(self.plan, cells, self._in_use, now)
        assert self._states is not None
        return quota_headers(self.plan, self._states, self._in_use, self._enforcer.clock())

    def settle_now(self, tokens: int) -> CIMultiDict[str] | None:
        """Counted in this process: count the answer's tokens and answer the headers at once, with no
        await; None when it must be settled with `await settle()` (counted elsewhere, or already)."""
        local = self._local
        if local is None or self.settled:
            return None
        if type(tokens) is not int or tokens < 0:
            check_amount(tokens, "tokens")
        self.settled = True
        # _count_here, written out: every answer of a tenant with quotas comes through here.
        now = local.clock()
        live = self._live
        assert live is not None
        plan = self.plan
        if now >= live[2]:
            live = self._live = local.live_cells(self.tenant_id, plan.rpm, plan.tokens)
        cells = live[3]
        if tokens:
            first = len(plan.rpm)
            if len(cells) > first:
                for cell in cells[first:]:
                    cell.used += tokens
        return quota_headers(plan, cells, 0, now)

    async def settle(self, tokens: int) -> None:
        """Count the answer's tokens and free the request's slot; later calls do nothing."""
        if not self._begin_settle(tokens):
            return
        local = self._local
        if local is not None:  # counted here, no slot held: nothing to await
            self._count_here(local, tokens)
            return
        try:
            windows = self.plan.tokens
            if tokens and windows and self._states is not None:
                added = await self._enforcer.counter.add(self.tenant_id, windows, tokens)
                self._states[-len(windows) :] = added
        finally:
            if self._holder is not None:
                holder, self._holder = self._holder, None
                await self._enforcer.slots.give_back(self.tenant_id, holder)


class QuotaEnforcer:
    """Admits a tenant's request against its quotas and counts its tokens after; exact across replicas."""

    def __init__(
        self, counter: QuotaCounter, slots: TenantSlots, clock: Callable[[], float] = time.time
    ) -> None:
        self.counter = counter
        self.slots = slots
        self.clock = clock
        # Counts in this process: a request of a plan without max_concurrent is admitted on the
        # counter's live cells, without building a decision (the path every admitted request takes).
        self.local = counter if isinstance(counter, MemoryQuotaCounter) else None
        # The plan of each quota set seen: tenants keep theirs for a long time, so each is built once.
        self._plans: dict[Quotas, QuotaPlan] = {}

    def plan(self, quotas: Quotas) -> QuotaPlan:
        """The windows and headers of `quotas`, built the first time they are seen."""
        plan = self._plans.get(quotas)
        if plan is None:
            if len(self._plans) >= PLANS_MAX:
                self._plans.clear()
            plan = self._plans[quotas] = QuotaPlan(quotas)
        return plan

    def admit_now(self, tenant_id: str, plan: QuotaPlan) -> Admission | None:
        """Admit with no await when counted in this process and the plan holds no slot (raising
        QuotaExceeded as admit does); None when the request must `await admit()`."""
        local = self.local
        if local is None or plan.concurrent is not None:
            return None
        live = local.live_cells(tenant_id, plan.rpm, plan.tokens)
        cells = live[3]
        # rpm takes 1 (room iff used < limit), the token windows must have room left: one test each
        # (indexed: zip(..., strict=False) would parse its keyword on every request).
        i = 0
        for most in plan.limits:
            if cells[i].used >= most:
                raise self._counted_refusal(tenant_id, plan, cells)
            i += 1
        if plan.rpm:
            cells[0].used += 1
        return Admission(self, tenant_id, plan, None, None, 0, live)

    async def admit(self, tenant_id: str, quotas: Quotas | QuotaPlan) -> Admission:
        """Let a request in or raise QuotaExceeded: rpm takes 1, token windows must have room, a slot free."""
        plan = quotas if isinstance(quotas, QuotaPlan) else self.plan(quotas)
        admitted = self.admit_now(tenant_id, plan)
        if admitted is not None:
            return admitted
        rpm, token_windows, limit = plan.rpm, plan.tokens, plan.concurrent
        holder = None
        if limit is not None:
            # The slot first: a request refused for it then uses up nothing of the tenant's rpm.
            holder = await self.slots.try_take(tenant_id, limit)
            if holder is None:
                await self._refuse(tenant_id, plan, None, await self.counter.usage(tenant_id, plan.windows))
        in_use = 0
        try:
            # One counter call (one round trip on Redis): rpm takes 1, token windows must have room left.
            decision = await self.counter.consume(tenant_id, rpm, 1, checked=token_windows)
            if decision.denied is not None:
                if holder is not None:
                    # Given back before the refusal reads the slots in use, so its headers count it free.
                    await self.slots.give_back(tenant_id, holder)
                    holder = None
                # A spent token quota is named before the request count: it resets later (a minute at
                # least, where the requests' window may be about to roll) and asking again will not help.
                spent = [st for st in decision.windows[len(rpm) :] if st.used >= st.limit]
                denied = spent[0] if spent else decision.denied
                await self._refuse(tenant_id, plan, denied, list(decision.windows))
            if holder is not None:
                in_use = await self.slots.in_use(tenant_id)
        except BaseException:
            if holder is not None:
                await self.slots.give_back(tenant_id, holder)
            raise
        # The counter answers rpm first, then the token windows per minute, day, month: the plan's order.
        return Admission(self, tenant_id, plan, list(decision.windows), holder, in_use)

    async def close(self) -> None:
        """Give back held slots, then close the counter (slots first: they may share its client)."""
        try:
            await self.slots.close()
        finally:
            await self.counter.close()

    def _counted_refusal(self, tenant_id: str, plan: QuotaPlan, cells: Sequence[Cell]) -> QuotaExceeded:
        """The refusal by the first full window of live cells (a spent token quota first)."""
        states = [window_state(w, c.used, c.reset_at) for w, c in zip(plan.windows, cells, strict=True)]
        full = [st for st in states if st.used >= st.limit]
        spent = [st for st in full if st.name != RPM.window]
        return self._refusal(tenant_id, plan, (spent or full)[0], states, 0)

    async def _refuse(
        self, tenant_id: str, plan: QuotaPlan, denied: WindowState | None, states: list[WindowState]
    ) -> None:
        """Raise QuotaExceeded for `denied` (None: requests in flight), with headers of every quota."""
        concurrent = plan.quotas.max_concurrent
        in_use = 0
        if concurrent is not None:
            in_use = concurrent if denied is None else await self.slots.in_use(tenant_id)
        raise self._refusal(tenant_id, plan, denied, states, in_use)

    def _refusal(
        self,
        tenant_id: str,
        plan: QuotaPlan,
        denied: WindowState | None,
        states: list[WindowState],
        in_use: int,
    ) -> QuotaExceeded:
        now = self.clock()
        quotas = plan.quotas
        if denied is None:
            # How long a request in flight lasts is unknown; one second is a polite hint to retry.
            quota, retry_after = "max_concurrent", 1.0
            message = (
                f"tenant {tenant_id!r} reached its max_concurrent quota of {quotas.max_concurrent} requests "
                "in flight; retry when one of them finishes"
            )
        else:
            kind = _BY_WINDOW[denied.name]
            quota, retry_after = kind.quota, max(0.0, denied.reset_at - now)
            message = (
                f"tenant {tenant_id!r} reached its {quota} quota of {denied.limit} {kind.unit}; "
                f"it resets in {retry_after:.1f} s"
            )
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
        headers.update(quota_headers(plan, states, in_use, now))
        return QuotaExceeded(
            message, tenant_id=tenant_id, quota=quota, retry_after=retry_after, headers=headers
        )


# The enforcer counts in limiter.url, shared with the limiter: the limiter's own parameters are accepted
# there and left to it; the slots' lease is the enforcer's; the rest belongs to the core quota counter.
_LIMITER_PARAMS = ("batch", "sweep_interval", "lease")


def _counter_url(url: BackendURL) -> BackendURL:
    return replace(url, params={k: v for k, v in url.params.items() if k not in _LIMITER_PARAMS})


def _memory(url: BackendURL) -> QuotaEnforcer:
    from llmkit.core.limiter.quota_memory import MemoryQuotaCounter

    url.check_params(["sweep_interval"])
    counter = MemoryQuotaCounter(sweep_interval=url.get("sweep_interval", float, 60.0))
    return QuotaEnforcer(counter, MemoryTenantSlots())


def _redis(url: BackendURL) -> QuotaEnforcer:
    from llmkit.core.limiter import redis_quota_counter

    url.check_params(["prefix", "timeout", "max_connections", "margin", *_LIMITER_PARAMS])
    lease = url.get("lease", float, 30.0)
    if lease <= 0:
        raise ConfigError(f"quota URL: lease must be > 0 seconds; got {lease:g}")
    counter = redis_quota_counter(_counter_url(url))
    # One client for both: the counter owns it and closes it after the slots gave theirs back.
    return QuotaEnforcer(counter, RedisTenantSlots(counter.client, prefix=counter.prefix, lease=lease))


# The one table of quota backends; backend modules are imported only when their scheme is used.
SCHEMES: dict[str, Callable[[BackendURL], QuotaEnforcer]] = {
    "memory": _memory,
    "redis": _redis,
    "redis+sentinel": _redis,
}


def quota_enforcer_from_url(url: str) -> QuotaEnforcer:
    """`memory://` or `redis://host:6379/0?prefix=llmkit&timeout=2&lease=30` -> a QuotaEnforcer."""
    parsed = parse_backend_url(url, "quota", SCHEMES)
    return SCHEMES[parsed.scheme](parsed)
