"""The engine of `llmkit publish`: generated events with duplicates, pooled POSTs, retries, --verify rules."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from llmkit.aggregate.verify import COUNTERS, Expected, percentiles, verify_counts
from llmkit.aggregate.workload import Batch, Plan
from llmkit.core import telemetry
from llmkit.errors import LlmkitError

JSON_HEADERS = {"Content-Type": "application/json"}
BACKOFF_BASE = 0.1  # seconds before the first retry; doubles with every retry
BACKOFF_CAP = 5.0
# A Retry-After beyond this is clamped: one odd answer should not stall the run for minutes.
MAX_RETRY_AFTER = 60.0
SETTLE_POLL = 0.2  # seconds between /stats reads while queued events are being stored

OnBatch = Callable[[int, bool], None]


class PublishFailed(LlmkitError):
    """The run could not start: the server is unreachable."""


@dataclass
class Tally:
    """What happened to the run's requests, updated as answers arrive."""

    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    failed_batches: int = 0
    retries: int = 0
    unknown_events: int = 0
    queued_batches: int = 0
    accepted: int = 0
    server_duplicates: int = 0
    accepted_known: bool = True
    latencies: list[float] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    acked_keys: set[int] = field(default_factory=set)
    unknown_keys: set[int] = field(default_factory=set)
    aborted: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: ok, retry or reject, with the label counted in `attempts`."""

    kind: str
    label: str
    unknown: bool = False  # the server may have stored the batch (timeout, dropped connection, 5xx)
    wait: float | None = None  # the server's Retry-After, in seconds
    message: str = ""
    body: Any = None


def describe(exc: BaseException, url: str) -> str:
    """A one-line reason for a failed request."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return f"cannot connect to {exc.host}:{exc.port}: {os.strerror(errno) if errno else exc.os_error}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} in time (--timeout)"
    return f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")


def server_message(raw: bytes) -> str:
    """The reason an error body gives: llmkit's error.message, FastAPI's detail, or the text itself."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace").strip()[:200] or "(empty body)"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(part) for part in first.get("loc", []))
        more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
        return f"{where}: {first.get('msg', first)}{more}"
    return str(detail or body)[:200]


def _seconds(header: str | None) -> float | None:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER) if header is not None else None
    except ValueError:
        return None


class Publisher:
    """`concurrency` workers POSTing a plan's batches through one pooled session, retrying what is safe."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, retries: int, rate: float, on_batch: OnBatch | None
    ) -> None:
        self.session = session
        self.url = url
        self.publish_url = f"{url}/publish"
        self.host = urlsplit(url).hostname or ""
        self.retries = retries
        self.rate = rate
        self.on_batch = on_batch
        self.tally = Tally()
        self._next_slot = 0.0
        self._jitter = random.Random()

    async def run(self, plan: Plan, concurrency: int) -> float:
        """Send every batch; the wall time in seconds."""
        batches = iter(plan.batches)
        started = time.perf_counter()
        await asyncio.gather(*(self._worker(batches) for _ in range(concurrency)))
        return time.perf_counter() - started

    async def _worker(self, batches: Iterator[Batch]) -> None:
        # One shared iterator: next() never interleaves on a single event loop.
        for batch in batches:
            if self.tally.aborted:
                return
            await self._send(batch)

    async def _pace(self, events: int) -> None:
        if not self.rate:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_slot)
        self._next_slot = start + events / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def _delay(self, retry: int, wait: float | None) -> float:
        if wait is not None:
            return wait * self._jitter.uniform(1.0, 1.1)
        # Exponential backoff with jitter, so workers that failed together do not retry together.
        return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1)) * self._jitter.uniform(0.5, 1.0)

    async def _send(self, batch: Batch) -> None:
        tally = self.tally
        tally.sent += batch.size
        outcome = Outcome("retry", "none")
        for attempt in range(self.retries + 1):
            if attempt:
                tally.retries += 1
                await asyncio.sleep(self._delay(attempt, outcome.wait))
            await self._pace(batch.size)
            outcome = await self._attempt(batch)
            tally.attempts[outcome.label] += 1
            if outcome.unknown:
                tally.unknown_events += batch.size
                tally.unknown_keys.update(batch.keys)
            if outcome.kind != "retry":
                break
        ok = outcome.kind == "ok"
        if ok:
            tally.acknowledged += batch.size
            tally.acked_keys.update(batch.keys)
            body = outcome.body if isinstance(outcome.body, dict) else {}
            if outcome.label == "202":
                tally.queued_batches += 1
            if type(body.get("accepted")) is int and type(body.get("duplicates")) is int:
                tally.accepted += body["accepted"]
                tally.server_duplicates += body["duplicates"]
            else:
                tally.accepted_known = False
        else:
            tally.failed += batch.size
            tally.failed_batches += 1
            tally.errors[outcome.message] += 1
            if outcome.label == "refused":
                # The server is gone: the other batches would only wait out their retries too.
                tally.aborted = outcome.message
        if self.on_batch is not None:
            self.on_batch(batch.size, ok)

    async def _attempt(self, batch: Batch) -> Outcome:
        started = time.perf_counter()
        if not telemetry.recording():
            return await self._post(batch, started, JSON_HEADERS)
        attributes = {"llmkit.batch.events": batch.size, "server.address": self.host}
        with telemetry.client_span("publish batch", attributes) as current:
            outcome = await self._post(batch, started, telemetry.inject(JSON_HEADERS))
            assert current is not None  # tracing is on
            current.set_attribute("llmkit.publish.outcome", outcome.label)
            if outcome.kind != "ok":
                current.set_attribute("error.type", outcome.label)
            return outcome

    async def _post(self, batch: Batch, started: float, headers: Mapping[str, str]) -> Outcome:
        try:
            async with self.session.post(self.publish_url, data=batch.body, headers=headers) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            # The request never reached the server: nothing can have been stored.
            return Outcome("retry", "refused", message=describe(exc, self.publish_url))
        except (aiohttp.ClientError, TimeoutError) as exc:
            label = "timeout" if isinstance(exc, TimeoutError) else "disconnected"
            return Outcome("retry", label, unknown=True, message=describe(exc, self.publish_url))
        if status in (200, 202):
            self.tally.latencies.append(time.perf_counter() - started)
            try:
                return Outcome("ok", str(status), body=orjson.loads(raw))
            except orjson.JSONDecodeError:
                return Outcome("ok", str(status))
        message = f"HTTP {status} from POST {self.publish_url}: {server_message(raw)}"
        if status == 429:
            return Outcome("retry", "429", wait=_seconds(retry_after), message=message)
        if status >= 500:
            # A 5xx may come after the commit (a proxy's 502, a crash while answering): outcome unknown.
            return Outcome("retry", str(status), unknown=True, wait=_seconds(retry_after), message=message)
        if status == 413:
            message += " (send smaller batches)"
        return Outcome("reject", str(status), message=message)


async def read_counters(session: aiohttp.ClientSession, url: str) -> dict[str, int] | None:
    """received / unique_processed / duplicated_dropped from GET /stats; None if the server has none."""
    try:
        async with session.get(f"{url}/stats") as response:
            if response.status != 200:
                return None
            data = orjson.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PublishFailed(describe(exc, f"{url}/stats")) from exc
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or any(type(data.get(name)) is not int for name in COUNTERS):
        return None
    return {name: data[name] for name in COUNTERS}


async def settle(
    session: aiohttp.ClientSession, url: str, before: Mapping[str, int], acknowledged: int, timeout: float
) -> dict[str, int] | None:
    """/stats once `received` has stopped changing (and covers what was acknowledged), or at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[str, int] | None = None
    steady = 0
    while True:
        now = await read_counters(session, url)
        if now is None:
            return None
        covered = now["received"] - before["received"] >= acknowledged
        steady = steady + 1 if covered and now == last else 0
        if steady >= 2 or loop.time() >= deadline:
            return now
        last = now
        await asyncio.sleep(SETTLE_POLL)


@dataclass(frozen=True)
class RunOptions:
    """How to send: where, how many requests at once, how fast, how stubbornly."""

    url: str
    concurrency: int = 4
    rate: float = 0.0
    retries: int = 5
    timeout: float = 30.0
    fresh: bool = True
    settle_timeout: float = 30.0


@dataclass(frozen=True)
class Report:
    """A finished run: the tally, the wall time and the server's counters before and after."""

    plan: Plan
    options: RunOptions
    tally: Tally
    elapsed: float
    before: dict[str, int] | None
    after: dict[str, int] | None
    stats_error: str | None = None

    @property
    def delta(self) -> dict[str, int] | None:
        """How much each /stats counter grew during the run."""
        if self.before is None or self.after is None:
            return None
        return {name: self.after[name] - self.before[name] for name in COUNTERS}

    def expected(self) -> Expected:
        """The run's side of --verify."""
        tally = self.tally
        return Expected(
            acknowledged=tally.acknowledged,
            unknown_events=tally.unknown_events,
            distinct_acked=len(tally.acked_keys),
            distinct_possible=len(tally.acked_keys | tally.unknown_keys),
            distinct_unknown=len(tally.unknown_keys),
            fresh=self.options.fresh,
            accepted=tally.accepted if tally.accepted_known and tally.acknowledged else None,
        )

    def problems(self) -> list[str]:
        """--verify: why the server's numbers disagree with the run (empty when they agree)."""
        delta = self.delta
        if delta is None:
            return [self.stats_error or f"{self.options.url}/stats has no {', '.join(COUNTERS)} counters"]
        return verify_counts(self.expected(), delta)

    def to_dict(self, verify: bool) -> dict[str, Any]:
        """Everything measured, as one JSON-ready object."""
        tally, plan = self.tally, self.plan
        latency = {
            k: None if v is None else round(v * 1000, 3) for k, v in percentiles(tally.latencies).items()
        }
        latency["max"] = round(max(tally.latencies) * 1000, 3) if tally.latencies else None
        problems = self.problems() if verify else []
        expected = self.expected()
        return {
            "url": self.options.url,
            "events": plan.count,
            "batches": len(plan.batches),
            "distinct_sent": len(plan.ids),
            "duplicates_sent": plan.duplicates,
            "topics": sorted(set(plan.topics)),
            "sent": tally.sent,
            "acknowledged": tally.acknowledged,
            "failed": tally.failed,
            "failed_batches": tally.failed_batches,
            "not_sent": plan.count - tally.sent,
            "retries": tally.retries,
            "unknown_outcome_events": tally.unknown_events,
            "queued_batches": tally.queued_batches,
            "attempts": dict(sorted(tally.attempts.items())),
            "errors": [f"{msg} ({n} batches)" if n > 1 else msg for msg, n in tally.errors.most_common()],
            "elapsed_s": round(self.elapsed, 4),
            "events_per_s": round(tally.acknowledged / self.elapsed, 1) if self.elapsed else None,
            "latency_ms": latency,
            "server": {"accepted": expected.accepted, "duplicates": tally.server_duplicates},
            "stats": {"before": self.before, "after": self.after, "delta": self.delta},
            "verify": {"ok": not problems, "problems": problems} if verify else None,
        }


async def publish(plan: Plan, options: RunOptions, on_batch: OnBatch | None = None) -> Report:
    """Read /stats, send the plan, read /stats again (after queued events settle); PublishFailed if down."""
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        before = await read_counters(session, options.url)
        publisher = Publisher(session, options.url, options.retries, options.rate, on_batch)
        elapsed = await publisher.run(plan, options.concurrency)
        tally = publisher.tally
        after, error = None, None
        if before is not None:
            try:
                if tally.queued_batches or tally.unknown_events:
                    # Queued events, or a lost answer the server is still working on, land in /stats later.
                    args = (session, options.url, before, tally.acknowledged, options.settle_timeout)
                    after = await settle(*args)
                else:
                    after = await read_counters(session, options.url)
            except PublishFailed as exc:
                error = f"cannot read /stats after the run: {exc}"
    return Report(plan, options, tally, elapsed, before, after, error)


def run_publish(plan: Plan, options: RunOptions, on_batch: OnBatch | None = None) -> Report:
    """`publish` on a fresh event loop, uvloop when it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(publish(plan, options, on_batch))
