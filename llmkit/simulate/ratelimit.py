"""Requests- and tokens-per-minute limits per model, with OpenAI's x-ratelimit-* headers on every answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import istr

from llmkit.core.http import ApiError, request_key
from llmkit.core.limiter import Limiter, TokenBucket
from llmkit.core.tokenizer import count_prompt_tokens, count_tokens

HEADERS_KEY = request_key("llmkit_ratelimit", dict)
# Fields that bound how many tokens an answer may take, across the API shapes the simulator speaks.
_MAX_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def reset_text(seconds: float) -> str:
    """OpenAI's reset format: `120ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """What a request may cost, counted up front as OpenAI does: its prompt plus its max output tokens."""
    messages = body.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        prompt = count_prompt_tokens(messages)
    else:
        text = body.get("prompt", body.get("input", ""))
        prompt = count_tokens(text if isinstance(text, str) else orjson.dumps(text).decode())
    options = body.get("options")
    limit = next((body[f] for f in _MAX_FIELDS if isinstance(body.get(f), int)), None)
    if limit is None and isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        limit = options["num_predict"]
    return prompt + max(limit or 0, 0)


@dataclass
class ModelRateLimits:
    """One requests bucket and one tokens bucket per model; a limit of 0 is off."""

    rpm: int
    tpm: int
    requests: TokenBucket | None
    tokens: TokenBucket | None
    rejected: int = 0

    @classmethod
    def build(cls, limiter: Limiter, rpm: int, tpm: int) -> ModelRateLimits:
        """Buckets that refill a minute's budget evenly over the minute."""
        requests = limiter.token_bucket("simulate-rpm", rpm / 60.0, rpm) if rpm else None
        tokens = limiter.token_bucket("simulate-tpm", tpm / 60.0, tpm) if tpm else None
        return cls(rpm, tpm, requests, tokens)

    async def check(self, model: str, cost: int) -> dict[str, str]:
        """Take one request and `cost` tokens for `model`; the headers to send, or a 429 ApiError."""
        headers: dict[str, str] = {}
        if self.requests is not None:
            decision = await self.requests.acquire(model)
            headers.update(self._headers("requests", self.rpm, decision.remaining))
            if not decision.allowed:
                raise self._refused(model, "requests", "RPM", self.rpm, 1, decision.retry_after, headers)
        if self.tokens is not None:
            if cost > self.tpm:
                raise self._too_large(model, cost, headers)
            decision = await self.tokens.acquire(model, cost)
            headers.update(self._headers("tokens", self.tpm, decision.remaining))
            if not decision.allowed:
                raise self._refused(model, "tokens", "TPM", self.tpm, cost, decision.retry_after, headers)
        return headers

    @staticmethod
    def _headers(kind: str, limit: int, remaining: int) -> dict[str, str]:
        refill_per_s = limit / 60.0
        return {
            f"x-ratelimit-limit-{kind}": str(limit),
            f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": reset_text((limit - remaining) / refill_per_s),
        }

    def _refused(
        self, model: str, kind: str, unit: str, limit: int, cost: int, wait: float, headers: dict[str, str]
    ) -> ApiError:
        self.rejected += 1
        message = (
            f"Rate limit reached for {model} on {kind} per min ({unit}): Limit {limit}, Requested {cost}. "
            f"Please try again in {reset_text(wait)}."
        )
        retry = {"Retry-After": f"{max(1, round(wait + 0.4999))}", **headers}
        return ApiError(429, "rate_limit_exceeded", message, headers=retry, type=kind, param=None)

    def _too_large(self, model: str, cost: int, headers: dict[str, str]) -> ApiError:
        self.rejected += 1
        message = (
            f"Request too large for {model} on tokens per min (TPM): Limit {self.tpm}, Requested {cost}. "
            "Send a shorter prompt or a smaller max_tokens, or raise simulate.tpm."
        )
        return ApiError(429, "rate_limit_exceeded", message, headers=headers, type="tokens")


# What the headers say when no limit is configured: limits no load test reaches, as a top API tier's are.
OPEN_RPM, OPEN_TPM = 10_000_000, 10_000_000_000
_NAMES = tuple(
    istr(f"x-ratelimit-{part}-{kind}")
    for part in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
)


class UsageMeter:
    """OpenAI's x-ratelimit-* headers for a simulator with no limits: OPEN_RPM / OPEN_TPM per model.

    Counted in this process like the limits' buckets (each minute's budget refills evenly over it), so
    remaining and reset move as a client's load does, but nothing is ever refused. One call per answer:
    a few float operations and six strings, no await.
    """

    def __init__(self, rpm: int = OPEN_RPM, tpm: int = OPEN_TPM, clock: Callable[[], float] = time.monotonic):
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self._requests_per_s, self._tokens_per_s = rpm / 60.0, tpm / 60.0
        self._template: dict[str, str] = {_NAMES[0]: str(rpm), _NAMES[1]: str(tpm)}
        self._ms_texts: dict[int, str] = {}
        # model -> [last time, requests used, tokens used], both draining at the refill rate.
        self._used: dict[str, list[float]] = {}

    def headers(self, model: str, cost: int) -> dict[str, str]:
        """The headers of an answer to one request for `model` that may cost `cost` tokens."""
        now = self.clock()
        used = self._used.get(model)
        if used is None:
            used = self._used[model] = [now, 0.0, 0.0]
        elapsed = now - used[0]
        requests = used[1] - elapsed * self._requests_per_s
        requests = 1.0 if requests < 0.0 else requests + 1.0
        tokens = used[2] - elapsed * self._tokens_per_s
        tokens = float(cost) if tokens < 0.0 else tokens + cost
        used[0], used[1], used[2] = now, requests, tokens
        left_requests, left_tokens = self.rpm - int(requests + 0.999), self.tpm - int(tokens + 0.999)
        headers = self._template.copy()
        names = _NAMES
        headers[names[2]] = str(left_requests) if left_requests > 0 else "0"
        headers[names[3]] = str(left_tokens) if left_tokens > 0 else "0"
        headers[names[4]] = self._reset(requests / self._requests_per_s)
        headers[names[5]] = self._reset(tokens / self._tokens_per_s)
        return headers

    def _reset(self, seconds: float) -> str:
        # Under a second (always, at the open limits) the text is whole milliseconds: remembered.
        if seconds >= 1.0:
            return reset_text(seconds)
        ms = int(seconds * 1000 + 0.5)
        text = self._ms_texts.get(ms)
        if text is None:
            text = self._ms_texts[ms] = f"{ms}ms"
        return text


LIMITS_KEY = web.AppKey("llmkit_model_rate_limits", ModelRateLimits)


async def check(request: web.Request, limits: ModelRateLimits) -> None:
    """Take the request's budget from its model's RPM and TPM (a 429 when it is spent); the headers ride
    on whatever the request answers."""
    try:
        body = orjson.loads(await request.read())
    except (orjson.JSONDecodeError, ValueError):
        return  # the handler has already answered a malformed body with its own clear 400
    if not isinstance(body, dict):
        return
    model = body.get("model") if isinstance(body.get("model"), str) else "default"
    request[HEADERS_KEY] = await limits.check(str(model), estimate_tokens(body))


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, so streamed answers (prepared inside handlers) carry them too; only apps with limits pay it.
    for name, value in request.get(HEADERS_KEY, {}).items():
        response.headers.setdefault(name, value)


def install(app: web.Application, rpm: int, tpm: int, limiter_url: str) -> ModelRateLimits | None:
    """The limits when rpm or tpm is set (state in `limiter_url`, so replicas share a Redis budget), for
    every model route to `check` (they do in request_slot); None when both are off."""
    if not (rpm or tpm):
        return None
    from llmkit.core.limiter import limiter_from_url

    limiter = limiter_from_url(limiter_url)
    limits = app[LIMITS_KEY] = ModelRateLimits.build(limiter, rpm, tpm)
    app.on_response_prepare.append(_add_headers)

    async def close_limiter(app: web.Application) -> AsyncIterator[None]:
        yield
        await limiter.close()

    app.cleanup_ctx.append(close_limiter)
    return limits
