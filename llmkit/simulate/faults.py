"""Fault injection: 429, 500, 503, hangs and disconnects, by rate, per request header or by a schedule."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import istr

from llmkit.core.auth import ADMIN
from llmkit.core.http import ApiError, add_route, json_response, openapi, read_json, request_key
from llmkit.simulate.openapi import ADMIN_DOC, FAULTS_DOC

log = logging.getLogger("llmkit.simulate.faults")

KINDS = ("429", "500", "503", "timeout", "disconnect")
FAULT_HEADER = istr("x-llmkit-fault")  # pre-folded: looked up on every model request
# Set on a request whose stream gets 500/503 as OpenAI's in-stream error event, or a disconnect mid-stream.
STREAM_FAULT_KEY = request_key("llmkit_stream_fault", str)
_MAX_SCHEDULE = 10_000


class FaultInjector:
    """Decides the fault of each model request: header first, then the schedule, then the rates."""

    def __init__(
        self,
        rates: dict[str, float],
        timeout_s: float,
        retry_after: float,
        rng: random.Random | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.retry_after = retry_after
        self.rng = rng or random.Random()
        self.schedule: deque[list[Any]] = deque()
        self.injected: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.configured_rates = dict(rates)
        self.rates = dict(rates)

    def armed(self, header: str | None) -> bool:
        """Whether a request with this fault header can get a fault at all (checked on every request)."""
        return header is not None or bool(self.schedule) or self._rated

    @property
    def rates(self) -> dict[str, float]:
        """The share of requests that get each fault."""
        return self._rates

    @rates.setter
    def rates(self, rates: dict[str, float]) -> None:
        self._rates = rates
        self._rated = any(rates.values())

    def decide(self, forced: str | None) -> str | None:
        """The fault for one request, or None; counts what it injects."""
        kind = forced or self._scheduled() or self._random()
        if kind is not None:
            self.injected[kind] += 1
        return kind

    def _scheduled(self) -> str | None:
        while self.schedule:
            entry = self.schedule[0]
            kind, left = entry
            if left <= 0:
                self.schedule.popleft()
                continue
            entry[1] = left - 1
            if entry[1] <= 0:
                self.schedule.popleft()
            return None if kind == "ok" else str(kind)
        return None

    def _random(self) -> str | None:
        if not self._rated:
            return None
        roll = self.rng.random()
        for kind in KINDS:
            roll -= self.rates.get(kind, 0.0)
            if roll < 0:
                return kind
        return None

    def configure(self, body: Mapping[str, Any]) -> None:
        """Apply a POST /admin/faults body: `schedule` steps are appended, `rates` replace the rates."""
        steps = parse_schedule(body.get("schedule", []))
        rates = parse_rates(body.get("rates")) if "rates" in body else None
        if "fault" in body:
            steps.extend(parse_schedule([{"fault": body["fault"], "count": body.get("count", 1)}]))
        if not steps and rates is None:
            raise ApiError(
                400,
                "invalid_value",
                'give "schedule": [{"fault": "429", "count": 3}], "fault" and "count", or "rates"',
            )
        if len(self.schedule) + len(steps) > _MAX_SCHEDULE:
            raise ApiError(400, "invalid_value", f"the schedule holds at most {_MAX_SCHEDULE} steps")
        self.schedule.extend(steps)
        if rates is not None:
            self.rates = rates

    def reset(self) -> None:
        """Forget the schedule and go back to the profile's rates."""
        self.schedule.clear()
        self.rates = dict(self.configured_rates)

    def snapshot(self) -> dict[str, Any]:
        """What GET /admin/faults and /stats show."""
        return {
            "rates": dict(self.rates),
            "schedule": [{"fault": kind, "count": left} for kind, left in self.schedule],
            "injected": dict(self.injected),
            "timeout_s": self.timeout_s,
        }


def parse_kind(value: Any, where: str) -> str:
    """A fault kind from a header or a body, or a 400 that lists the kinds."""
    kind = str(value).strip().lower()
    if kind not in KINDS:
        raise ApiError(400, "invalid_value", f"{where} must be one of {', '.join(KINDS)}; got {value!r}")
    return kind


def parse_schedule(raw: Any) -> list[list[Any]]:
    """`[{"fault": "429", "count": 3}, {"fault": "ok", "count": 1}]` -> steps; "ok" lets requests through."""
    if not isinstance(raw, list):
        raise ApiError(400, "invalid_value", 'schedule must be a list such as [{"fault": "429", "count": 3}]')
    steps: list[list[Any]] = []
    for i, step in enumerate(raw):
        if not isinstance(step, dict) or "fault" not in step:
            raise ApiError(
                400, "invalid_value", f'schedule[{i}] must be an object like {{"fault": "503", "count": 2}}'
            )
        kind = (
            "ok" if str(step["fault"]).lower() == "ok" else parse_kind(step["fault"], f"schedule[{i}].fault")
        )
        count = step.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= _MAX_SCHEDULE:
            raise ApiError(400, "invalid_value", f"schedule[{i}].count must be an integer 1..{_MAX_SCHEDULE}")
        steps.append([kind, count])
    return steps


def parse_rates(raw: Any) -> dict[str, float]:
    """`{"429": 0.1, "disconnect": 0.01}` -> rates; each 0..1 and their sum at most 1."""
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_value", 'rates must be an object such as {"429": 0.1, "500": 0.05}')
    rates = dict.fromkeys(KINDS, 0.0)
    for key, value in raw.items():
        kind = parse_kind(key, "rates key")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ApiError(
                400, "invalid_value", f"rates[{key!r}] must be a number from 0 to 1; got {value!r}"
            )
        rates[kind] = float(value)
    if sum(rates.values()) > 1:
        raise ApiError(400, "invalid_value", "the fault rates add up to more than 1")
    return rates


def rates_from_settings(sim: Any) -> dict[str, float]:
    """The profile's fault_rate_* keys as a rates mapping."""
    return {kind: float(getattr(sim, f"fault_rate_{kind}")) for kind in KINDS}


INJECTOR_KEY = web.AppKey("llmkit_fault_injector", FaultInjector)


def _injected_error(kind: str, retry_after: float) -> ApiError:
    if kind == "429":
        return ApiError(
            429,
            "rate_limit_exceeded",
            "injected fault 429: rate limit reached for requests (x-llmkit-fault, schedule or fault rate)",
            headers={"Retry-After": f"{retry_after:g}"},
            type="rate_limit_exceeded",
        )
    status = int(kind)
    return ApiError(
        status,
        "server_error" if status == 500 else "service_unavailable",
        f"injected fault {kind}: the simulated model server failed; retry",
        type="server_error",
    )


async def inject(request: web.Request, injector: FaultInjector, header: str | None, in_stream: bool) -> None:
    """Apply the fault decided for one model request: raise its error, hang, cut the line, or mark the stream.

    `in_stream`: the request streams an OpenAI shape, so 500/503 become the in-stream error event and a
    disconnect happens halfway through the answer.
    """
    kind = injector.decide(parse_kind(header, f"header {FAULT_HEADER}") if header else None)
    if kind is None:
        return
    log.info("injecting fault %s into %s %s", kind, request.method, request.path)
    if in_stream and kind in ("500", "503", "disconnect"):
        request[STREAM_FAULT_KEY] = kind
        return
    if kind == "timeout":
        from llmkit.simulate.stream import pause  # here: stream imports this module

        await pause(request, injector.timeout_s)
        raise ApiError(504, "timeout", f"injected fault timeout: no answer within {injector.timeout_s:g}s")
    if kind == "disconnect":
        if request.transport is not None:
            request.transport.abort()
        # Nobody reads the answer: the connection is gone; 499 is what the metrics and access log record.
        raise ApiError(499, "client_closed_request", "injected fault disconnect: the connection was cut")
    raise _injected_error(kind, injector.retry_after)


def in_stream_error_event(kind: str) -> bytes:
    """OpenAI's in-stream error: one `data:` event with an `error` object, then the stream ends."""
    body = {
        "error": {
            "message": f"injected fault {kind}: the simulated model server failed mid-stream; retry",
            "type": "server_error",
            "param": None,
            "code": "server_error" if kind == "500" else "service_unavailable",
        }
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


@openapi(**ADMIN_DOC)
async def get_faults(request: web.Request) -> web.Response:
    """The fault rates, the remaining schedule and how many faults were injected."""
    return json_response(request.app[INJECTOR_KEY].snapshot())


@openapi(**FAULTS_DOC)
async def post_faults(request: web.Request) -> web.Response:
    """Script faults: {"schedule": [{"fault": "429", "count": 3}]} or {"fault": "503"} or {"rates": {...}}."""
    injector = request.app[INJECTOR_KEY]
    injector.configure(await read_json(request))
    return json_response(injector.snapshot())


@openapi(**ADMIN_DOC)
async def delete_faults(request: web.Request) -> web.Response:
    """Clear the schedule and restore the profile's fault rates."""
    injector = request.app[INJECTOR_KEY]
    injector.reset()
    return json_response(injector.snapshot())


def add_routes(app: web.Application, injector: FaultInjector) -> None:
    """Install the injector and /admin/faults (admin scope); model handlers `inject` through their slot."""
    app[INJECTOR_KEY] = injector
    add_route(app, "GET", "/admin/faults", get_faults, scope=ADMIN)
    add_route(app, "POST", "/admin/faults", post_faults, scope=ADMIN)
    add_route(app, "DELETE", "/admin/faults", delete_faults, scope=ADMIN)
