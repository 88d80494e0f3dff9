"""The delivery worker: sends the outbox's due deliveries, signed, and records every attempt.

Every replica runs one over the same store; a delivery is leased to one worker at a time (the store's
claim), so with replicas each is sent once, and one whose worker died is sent again once its lease runs
out (receivers deduplicate by `webhook-id`, the same on every attempt). Timeouts, connection errors, 429
and 5xx are retried with exponential backoff and jitter (a later Retry-After wins), until the attempts
are spent; any other status fails the delivery at once, and a 410 Gone disables the webhook too.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmkit import __version__
from llmkit.core.ids import fresh_hex
from llmkit.core.secrets import mask_secrets, mask_url
from llmkit.errors import BackendError
from llmkit.platform.store.base import Delivery, DeliveryAttempt, PlatformStore, Webhook
from llmkit.platform.webhooks.events import WebhookDirectory
from llmkit.platform.webhooks.signing import signed_headers
from llmkit.platform.webhooks.targets import GuardedResolver, UnsafeTarget, check_url

log = logging.getLogger("llmkit.platform.webhooks")

BATCH = 64
CONCURRENCY = 32
POLL_S = 1.0
OUTAGE_WAIT_S = 1.0
BACKOFF_BASE_S = 2.0
# A lease is the POST's timeout plus this (gateway.webhooks_lease_margin_s): room to record the attempt.
LEASE_MARGIN_S = 30.0
BACKOFF_MAX_S = 3600.0
# The longest Retry-After obeyed (a receiver asking for a day waits an hour, then is asked again).
RETRY_AFTER_MAX_S = 3600.0
MAX_ERROR_CHARS = 300
# How long close() lets POSTs in flight finish; the rest are cancelled and sent again after their lease.
CLOSE_WAIT_S = 2.0
USER_AGENT = f"llmkit-webhooks/{__version__}"


def backoff(attempts: int, base: float, most: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after `attempts` failed ones: base x 2^(attempts-1), at most `most`,
    with jitter (between half of it and all of it), so receivers coming back are not hit all at once."""
    delay = min(most, base * 2 ** max(0, attempts - 1))
    return float(delay * (0.5 + 0.5 * rng()))


def retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST came to: the status (None: no answer), its error text and whether to try again."""

    status: int | None
    error: str | None
    retry: bool
    wait: float | None = None  # the receiver's Retry-After


def outcome_of(status: int, retry_after_s: float | None) -> Outcome:
    """The outcome of an HTTP answer."""
    if 200 <= status < 300:
        return Outcome(status, None, False)
    if status == 429 or status >= 500:
        return Outcome(status, f"HTTP {status}", True, retry_after_s)
    if status == 410:
        return Outcome(status, "HTTP 410 Gone: the receiver asked for no more deliveries", False)
    return Outcome(
        status, f"HTTP {status}: not retried (only timeouts, connection errors, 429, 5xx are)", False
    )


class DeliveryWorker:
    """Claims due deliveries in batches and POSTs them (at most `concurrency` at once) until closed."""

    def __init__(
        self,
        store: PlatformStore,
        directory: WebhookDirectory,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        allow_private: bool = False,
        lease_margin: float = LEASE_MARGIN_S,
        concurrency: int = CONCURRENCY,
        batch: int = BATCH,
        poll_interval: float = POLL_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
        worker: str | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.batch = batch
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.clock = clock
        # A lease outlives one attempt with room to record it; a worker that died frees its rows after it.
        self.lease = timeout_s + lease_margin
        self.worker = worker or f"webhooks-{fresh_hex()[:16]}"
        self.counts = {"attempts": 0, "delivered": 0, "retried": 0, "failed": 0, "lost": 0, "disabled": 0}
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._outage = False

    def start(self) -> None:
        """Open the shared HTTP session and start claiming (idempotent)."""
        if self._loop_task is not None:
            return
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.allow_private), limit=self.concurrency, ttl_dns_cache=10
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            # The process's proxy variables must not route deliveries around the target checks.
            trust_env=False,
        )
        self._loop_task = asyncio.create_task(self._claim_loop(), name="llmkit-webhooks")

    def wake(self) -> None:
        """A delivery was just queued: claim now rather than at the next poll."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        """What health shows of the worker."""
        return {
            "worker": self.worker,
            "sending": len(self._running),
            **self.counts,
            "store_ok": not self._outage,
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        """Stop claiming, give the POSTs in flight CLOSE_WAIT_S to finish (the rest are sent again once
        their lease runs out), close the session."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _claim_loop(self) -> None:
        while True:
            await self._slots.acquire()
            free = 1
            while free < self.batch and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                claimed = await self._claim(free)
            except BaseException:
                for _ in range(free):
                    self._slots.release()
                raise
            for _ in range(free - len(claimed)):
                self._slots.release()
            for delivery in claimed:
                task = asyncio.create_task(self._send(delivery), name=f"llmkit-webhook-{delivery.id}")
                self._running.add(task)
                task.add_done_callback(self._done)
            if len(claimed) < free:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks: a delivery failed unexpectedly", exc_info=task.exception())

    async def _claim(self, limit: int) -> list[Delivery]:
        try:
            claimed = await self.store.claim_deliveries(self.worker, self.clock(), self.lease, limit)
        except BackendError as exc:
            self.last_error = str(exc)
            if not self._outage:
                self._outage = True
                log.warning("webhooks: cannot claim from the platform store, trying again: %s", exc)
            await asyncio.sleep(OUTAGE_WAIT_S)
            return []
        if self._outage:
            self._outage = False
            log.info("webhooks: the platform store answers again")
        return claimed

    async def _send(self, delivery: Delivery) -> None:
        try:
            hook = (await self.directory.by_id()).get(delivery.webhook_id)
        except BackendError as exc:
            self.last_error = str(exc)
            return  # the lease runs out and the delivery is due again
        now = self.clock()
        if hook is None or hook.disabled_at is not None:
            why = (
                "the webhook was deleted"
                if hook is None
                else f"the webhook is disabled: {hook.disabled_reason}"
            )
            await self._record(
                delivery,
                hook,
                DeliveryAttempt(delivery.id, delivery.webhook_id, delivery.attempts + 1, now, None, 0.0, why),
                Outcome(None, why, False),
            )
            return
        started = time.perf_counter()
        outcome = await self._post(hook, delivery)
        attempt = DeliveryAttempt(
            delivery.id,
            hook.id,
            delivery.attempts + 1,
            now,
            outcome.status,
            round((time.perf_counter() - started) * 1000, 3),
            outcome.error,
        )
        await self._record(delivery, hook, attempt, outcome)

    async def _post(self, hook: Webhook, delivery: Delivery) -> Outcome:
        """One signed POST of the delivery to the webhook's URL."""
        try:
            check_url(hook.url, self.allow_private)
        except UnsafeTarget as exc:
            return Outcome(None, f"target refused: {exc}", False)
        assert self._session is not None
        stamp = int(self.clock())
        headers = signed_headers(hook.secrets(self.clock()), delivery.id, stamp, delivery.payload)
        headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self._session.post(
                hook.url, data=delivery.payload, headers=headers, timeout=timeout, allow_redirects=False
            ) as answer:
                # The body is not needed; reading a little lets the connection be reused.
                await answer.content.read(4096)
                return outcome_of(answer.status, retry_after(answer.headers.get("Retry-After"), self.clock()))
        except TimeoutError:
            return Outcome(None, f"timed out after {self.timeout_s:g} s", True)
        except (aiohttp.ClientError, OSError) as exc:
            text = mask_secrets(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
            return Outcome(None, f"connection failed: {text}", True)

    async def _record(
        self, delivery: Delivery, hook: Webhook | None, attempt: DeliveryAttempt, outcome: Outcome
    ) -> None:
        now = self.clock()
        self.counts["attempts"] += 1
        if outcome.status is not None and 200 <= outcome.status < 300:
            state, next_at = "delivered", None
        elif outcome.retry and attempt.attempt < self.max_attempts:
            wait = backoff(attempt.attempt, self.backoff_base, self.backoff_max)
            if outcome.wait is not None:
                wait = max(wait, min(outcome.wait, RETRY_AFTER_MAX_S))
            state, next_at = "pending", now + wait
        else:
            state, next_at = "failed", None
        try:
            held = await self.store.record_attempt(attempt, self.worker, state, next_at)
        except BackendError as exc:
            self.last_error = str(exc)
            log.warning(
                "webhooks: could not record delivery %s (it will be sent again): %s", delivery.id, exc
            )
            return
        if not held:
            self.counts["lost"] += 1
            return
        self.counts[{"delivered": "delivered", "pending": "retried", "failed": "failed"}[state]] += 1
        where = mask_url(hook.url) if hook is not None else delivery.webhook_id
        log.info(
            "webhooks: %s %s to %s attempt %d: %s in %.0f ms%s",
            delivery.event_type,
            delivery.id,
            where,
            attempt.attempt,
            attempt.status if attempt.status is not None else (attempt.error or "no answer"),
            attempt.duration_ms,
            f", retrying in {next_at - now:.1f} s" if next_at is not None else f", {state}",
        )
        if outcome.status == 410 and hook is not None:
            await self._disable(hook, now)

    async def _disable(self, hook: Webhook, now: float) -> None:
        try:
            await self.store.disable_webhook(hook.id, "the receiver answered 410 Gone", now)
        except BackendError as exc:
            log.warning("webhooks: could not disable webhook %s after a 410: %s", hook.id, exc)
            return
        self.counts["disabled"] += 1
        self.directory.forget()
        log.warning("webhooks: webhook %s disabled: %s answered 410 Gone", hook.id, mask_url(hook.url))
