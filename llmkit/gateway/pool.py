"""UpstreamPool: the gateway's upstreams with weights, retries, failover and a circuit breaker each.

Semantics:

- The first attempt of a call goes to an upstream chosen by smooth weighted round-robin (nginx's: weights
  3 and 1 give a, a, b, a, ...) among those whose breaker lets a call through.
- A RetryableError (5xx, 408, 429, timeout, refused or dropped connection) is retried up to `retries`
  more times, on the next upstream in the list that has not failed this call yet (failover, at once),
  and on the same one again after a backoff (full jitter) once every upstream has failed it.
- A streamed call that has passed text on is not retried: listeners have shown that text.
- Every upstream has a CircuitBreaker (llmkit.core.breaker): `breaker_threshold` failed attempts in a row
  open it for `breaker_reset_s`; an open upstream is skipped, and a call finding every upstream open gets
  CircuitOpen (503) without any upstream being called.
- PermanentError (a 4xx, an unreadable answer) is not retried: the request is at fault, and to the
  breaker the upstream answered.
- A call cancelled by its caller (every listener left) is no failure of the upstream.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llmkit.core import telemetry
from llmkit.core.breaker import CallCounts, CircuitBreaker, backoff_delay
from llmkit.core.secrets import mask_url
from llmkit.core.upstream import SharedSession, Timeouts
from llmkit.errors import CircuitOpen, ConfigError, RetryableError, UpstreamError
from llmkit.gateway.calls import ChatCall, OnPiece, Outcome
from llmkit.gateway.upstream import UPSTREAM_KINDS, Upstream, gateway_session
from llmkit.settings import GatewaySettings

# How long a deep health check waits for one upstream.
CHECK_TIMEOUT_S = 5.0


def parse_upstreams(text: str) -> list[tuple[str, int]]:
    """`"http://a:11434*3, http://b:11434"` as [(url, weight)]; ConfigError naming gateway.upstreams."""
    found: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        url, star, weight_text = item.rpartition("*") if "*" in item else (item, "", "1")
        try:
            weight = int(weight_text)
        except ValueError:
            weight = 0
        if star and weight < 1:
            raise ConfigError(
                f"gateway.upstreams: the weight of {url!r} must be a whole number >= 1; got {weight_text!r}"
            )
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"gateway.upstreams: {url.strip()!r} is not an http(s) URL; e.g. http://127.0.0.1:11434 "
                "(ollama) or http://127.0.0.1:8000/v1 (openai)"
            )
        found.append((url.strip().rstrip("/"), weight))
    if not found:
        raise ConfigError("gateway.upstreams is empty; give at least one URL, e.g. http://127.0.0.1:11434")
    return found


@dataclass(slots=True)
class MemberCounters(CallCounts):
    """What one upstream did since the gateway started (each attempt is a call to its breaker)."""

    total_ms: float = 0.0  # time spent in succeeded attempts


class Member:
    """One upstream in the pool: its weight, breaker and counters."""

    __slots__ = ("breaker", "counters", "current", "upstream", "weight")

    def __init__(self, upstream: Upstream, weight: int, breaker: CircuitBreaker) -> None:
        self.upstream = upstream
        self.weight = weight
        self.breaker = breaker
        self.counters = MemberCounters()
        # Smooth weighted round-robin's running score.
        self.current = 0

    def stats(self) -> dict[str, Any]:
        """The row of /stats' `upstreams`."""
        c = self.counters
        return {
            # Answers never carry credentials (a token in an upstream's URL).
            "url": mask_url(self.upstream.url),
            "kind": self.upstream.kind,
            "weight": self.weight,
            "breaker": self.breaker.state,
            "failures_in_row": self.breaker.failures_in_row,
            "attempts": c.calls,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "permanent": c.permanent,
            "cancelled": c.cancelled,
            "rejected": self.breaker.rejected,
            "opened": self.breaker.opened,
            "average_ms": round(c.total_ms / c.succeeded, 1) if c.succeeded else None,
        }


class _Relay:
    """Passes pieces on and remembers whether any was passed (then the call is not retried)."""

    __slots__ = ("on_piece", "passed")

    def __init__(self, on_piece: OnPiece) -> None:
        self.on_piece = on_piece
        self.passed = False

    def __call__(self, text: str) -> None:
        self.passed = True
        self.on_piece(text)


class UpstreamPool:
    """Calls the upstreams: weighted choice, retries with failover and backoff, a breaker per upstream."""

    def __init__(
        self,
        members: list[Member],
        *,
        retries: int = 2,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        session: SharedSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not members:
            raise ConfigError("gateway.upstreams is empty; give at least one URL")
        self.members = members
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retried = 0  # attempts after the first
        self.failovers = 0  # retries that went to another upstream
        self._session = session
        self._rng = rng or random.Random()
        self._total_weight = sum(m.weight for m in members)

    def watch_circuits(self, on_change: Callable[[str, str], None]) -> None:
        """Tell `on_change(upstream_url, "open"|"closed")` when an upstream's circuit opens or recovers."""
        for member in self.members:
            member.breaker.on_change = on_change

    def pick(self, exclude: Any = ()) -> Member | None:
        """The next upstream by smooth weighted round-robin among those that may be called now."""
        if len(self.members) == 1:
            only = self.members[0]
            return only if only not in exclude and only.breaker.available() else None
        best: Member | None = None
        total = 0
        for member in self.members:
            if member in exclude or not member.breaker.available():
                continue
            member.current += member.weight
            total += member.weight
            if best is None or member.current > best.current:
                best = member
        if best is not None:
            best.current -= total
        return best

    def refusal(self) -> CircuitOpen:
        """The CircuitOpen of a call that finds every upstream's circuit open (each breaker counts it)."""
        refusals = [m.breaker.refusal() for m in self.members]
        return CircuitOpen(
            f"every upstream's circuit is open: {'; '.join(map(str, refusals))}; "
            "gateway.breaker_threshold failed calls in a row open it for gateway.breaker_reset_s",
            min(r.retry_after for r in refusals),
        )

    async def chat(self, call: ChatCall, on_piece: OnPiece | None) -> Outcome:
        """The answer to `call` from the first upstream that gives one (see the module docstring)."""
        member = self.pick()
        if member is None:
            raise self.refusal()
        relay = None if on_piece is None else _Relay(on_piece)
        failed: list[Member] = []
        attempts = self.retries + 1
        while True:
            try:
                return await self._attempt(member, call, relay)
            except RetryableError as exc:
                failed.append(member)
                if len(failed) >= attempts:
                    raise self._gave_up(exc, failed) from exc
                if relay is not None and relay.passed:
                    raise self._gave_up(exc, failed, "the streamed answer had started") from exc
                nxt = self.pick(exclude=failed)
                if nxt is None:
                    # Every upstream failed this call: back off, then try the one that may be called.
                    await asyncio.sleep(
                        backoff_delay(
                            len(failed) - 1,
                            exc.retry_after,
                            base=self.backoff_base,
                            cap=self.backoff_cap,
                            rng=self._rng,
                        )
                    )
                    nxt = self.pick()
                    if nxt is None:
                        raise self._gave_up(exc, failed, "every circuit is open") from exc
                else:
                    self.failovers += 1
                self.retried += 1
                member = nxt

    async def _attempt(self, member: Member, call: ChatCall, relay: _Relay | None) -> Outcome:
        if telemetry.tracer is not None and telemetry.recording():
            return await self._traced_attempt(member, call, relay)
        start = time.monotonic()
        outcome = await member.breaker.guard(
            lambda _trial: member.upstream.chat(call, relay), member.counters, cancel_fails=False
        )
        member.counters.total_ms += (time.monotonic() - start) * 1000
        return outcome

    async def _traced_attempt(self, member: Member, call: ChatCall, relay: _Relay | None) -> Outcome:
        """One attempt in a GenAI `chat {model}` CLIENT span; the upstream gets its traceparent."""
        upstream = member.upstream
        attributes = telemetry.genai_request(upstream.kind, call.model, upstream.url, call.messages)
        with telemetry.client_span(f"chat {call.model}", attributes) as current:
            start = time.monotonic()
            outcome = await member.breaker.guard(
                lambda _trial: upstream.chat(call, relay), member.counters, cancel_fails=False
            )
            member.counters.total_ms += (time.monotonic() - start) * 1000
            telemetry.genai_response(
                current, outcome.model, outcome.finish_reason, outcome.usage, outcome.content
            )
            return outcome

    def _gave_up(self, last: RetryableError, failed: list[Member], why: str = "") -> UpstreamError:
        """The last error, saying how many attempts were made on which upstreams (and why no more)."""
        tried = list(dict.fromkeys(m.upstream.url for m in failed))
        count = len(failed)
        summary = f"gave up after {count} attempt{'s' if count != 1 else ''}"
        if len(tried) > 1:
            summary += f" on {', '.join(tried)}"
        if why:
            summary += f": {why}"
        return UpstreamError(f"{last}; {summary} (gateway.retries={self.retries})", last.status)

    async def warm(self, model: str) -> dict[str, Any]:
        """Have an upstream load `model`: {"model", "upstream", "load_ms"}."""
        member = self.pick()
        if member is None:
            raise self.refusal()
        start = time.monotonic()
        await member.upstream.warm(model)
        return {"model": model, "upstream": member.upstream.url, "load_ms": _ms_since(start)}

    async def check(self) -> list[dict[str, Any]]:
        """Every upstream's reachability (a cheap request each, at most CHECK_TIMEOUT_S)."""
        return list(await asyncio.gather(*(self._check(m) for m in self.members)))

    async def _check(self, member: Member) -> dict[str, Any]:
        row: dict[str, Any] = {"url": mask_url(member.upstream.url), "kind": member.upstream.kind}
        start = time.monotonic()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await member.upstream.check()
        except UpstreamError as exc:
            row.update(ok=False, error=str(exc))
        except TimeoutError:
            row.update(ok=False, error=f"no answer within {CHECK_TIMEOUT_S:g} s")
        else:
            row["ok"] = True
        row.update(latency_ms=_ms_since(start), breaker=member.breaker.state)
        return row

    async def models(self) -> list[str]:
        """The models every reachable upstream offers, each once, in upstream order."""
        found = await asyncio.gather(*(m.upstream.models() for m in self.members), return_exceptions=True)
        names: dict[str, None] = {}
        for result in found:
            if isinstance(result, BaseException):
                if not isinstance(result, UpstreamError):
                    raise result
                continue
            names.update(dict.fromkeys(result))
        if not names and isinstance(found[0], UpstreamError):
            raise found[0]
        return list(names)

    def stats(self) -> list[dict[str, Any]]:
        """One row per upstream."""
        return [m.stats() for m in self.members]

    async def close(self) -> None:
        """Close every upstream and the shared HTTP session."""
        for member in self.members:
            await member.upstream.close()
        if self._session is not None:
            await self._session.close()


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def pool_from_settings(gw: GatewaySettings) -> UpstreamPool:
    """The pool `gateway.*` describes: kind, URLs with weights, timeouts, retries and breakers."""
    make = UPSTREAM_KINDS[gw.upstream_kind]
    timeouts = Timeouts(
        connect=gw.connect_timeout_s,
        first_byte=gw.first_byte_timeout_s,
        idle=gw.idle_timeout_s,
        section="gateway",
    )
    session = SharedSession(gateway_session)
    members = [
        Member(
            make(url, api_key=gw.api_key, keep_alive=gw.keep_alive, timeouts=timeouts, session=session),
            weight,
            CircuitBreaker(url, gw.breaker_threshold, gw.breaker_reset_s),
        )
        for url, weight in parse_upstreams(gw.upstreams)
    ]
    return UpstreamPool(
        members,
        retries=gw.retries,
        backoff_base=gw.backoff_base_s,
        backoff_cap=gw.backoff_cap_s,
        session=session,
    )
