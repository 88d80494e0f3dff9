"""OpenTelemetry tracing for every llmkit server: lazy setup, span helpers (GenAI ones too), traceparent.

While tracing is off `tracer` stays None: every hook checks that one module attribute first (a server's
tracing is a property of its process, like its log handlers). While it is on, spans are recorded by the
lean recorder of `span_recorder` and exported by a process of their own (`span_exporter`, through the
OpenTelemetry SDK); this process never imports OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmkit.core import span_recorder
from llmkit.core.span_recorder import CLIENT, ERROR, INTERNAL, SERVER, RecordingSpan, Sampler, SpanContext

if TYPE_CHECKING:
    from aiohttp import web

    from llmkit.settings import TelemetrySettings

# Set by configure() when tracing is on (the sampler new spans start from); None otherwise.
tracer: Sampler | None = None
# Whether prompts and answers may go into spans (telemetry.capture_content).
capture_content = False
_current = span_recorder.current.get

# The exporter gives up on a batch after this long (the collector down or hanging): spans are dropped,
# requests never wait for it (it runs in a process of its own).
EXPORT_TIMEOUT_S = 2.0
# Spans waiting for export at most (here, and again in the exporter); past it new ones are dropped.
MAX_QUEUE = 4096
# While the collector is down the exporter logs two lines per batch; one a minute says as much.
EXPORT_LOG_INTERVAL_S = 60.0
# How long stopping waits for the exporter to send what is left before it is killed.
CLOSE_TIMEOUT_S = 3 * EXPORT_TIMEOUT_S + 1

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"


class _NoSpan:
    """The shared no-op `with` block while nothing is recorded."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def end(self, exc: BaseException | None = None) -> None:
        """Nothing to end."""


_NOOP = _NoSpan()


class _Scope:
    """A recording span as the current one for a `with` block; ended (and exported) when it closes.
    `errors`: a block that raises leaves its `error.type` on the span (our child spans), else only the
    ERROR status (the server and linked spans, as the SDK's own `start_as_current_span`)."""

    __slots__ = ("errors", "span", "token")

    def __init__(self, span: RecordingSpan, errors: bool) -> None:
        self.span = span
        self.errors = errors

    def __enter__(self) -> RecordingSpan:
        self.token = span_recorder.current.set(self.span)
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span_recorder.current.reset(self.token)
        self.end(exc)

    def end(self, exc: BaseException | None = None) -> None:
        """End the span, marked as failed by `exc` when given."""
        span = self.span
        if exc is not None:
            if self.errors:
                # The class only: an error's text may quote a prompt or an upstream URL.
                span.attributes["error.type"] = _error_type(exc)
            span.set_status(ERROR, type(exc).__name__)
        span.end()


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: `{endpoint}/v1/traces`, or the endpoint itself when it already ends so."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def configure(settings: TelemetrySettings, service: str, version: str = "") -> None:
    """Start tracing this process as `service` when telemetry.enabled is on (a no-op otherwise)."""
    global tracer, capture_content
    if not settings.enabled:
        return
    if span_recorder.active is not None:  # configured again: one exporter process at a time
        shutdown()
    url = traces_url(settings.otlp_endpoint)
    if urlsplit(url).port == 4317:
        # The seed's example names the gRPC port; the collector's OTLP/HTTP port is 4318.
        logging.getLogger(__name__).warning(
            "tracing: %s is the OTLP gRPC port; llmkit exports OTLP/HTTP (usually port 4318)", url
        )
    resource = {
        "service.name": service,
        "service.version": version,
        "deployment.environment.name": settings.environment,
        # Which worker of a pre-forked server (configure runs in each, after the fork).
        "process.pid": os.getpid(),
    }
    config = {
        "url": url,
        "timeout": EXPORT_TIMEOUT_S,
        "max_queue": MAX_QUEUE,
        "log_interval": EXPORT_LOG_INTERVAL_S,
        "resource": resource,
        "version": version,
    }
    span_recorder.active = span_recorder.Recorder(config, MAX_QUEUE)
    capture_content = settings.capture_content
    # Parent-based: a request whose caller sampled its trace is traced; a new trace with sampling_rate.
    tracer = Sampler(settings.sampling_rate)


async def close(app: web.Application | None = None) -> None:
    """Export what is left and stop tracing (an app cleanup hook; the wait runs off the loop)."""
    await asyncio.to_thread(shutdown)


def shutdown() -> None:
    """Export what is left (waiting at most CLOSE_TIMEOUT_S) and stop tracing."""
    global tracer
    recorder, span_recorder.active, tracer = span_recorder.active, None, None
    if recorder is not None:
        recorder.close(CLOSE_TIMEOUT_S)


def recording() -> bool:
    """Whether a span made now would be kept: tracing is on and the current trace is sampled (or there
    is none yet, and the sampler decides)."""
    if tracer is None:
        return False
    current = _current()
    # An unsampled request's spans are dropped anyway: its children are not even made.
    return current is None or current.sampled


def _child(name: str, attributes: Mapping[str, Any] | None, kind: int) -> _Scope | _Unsampled | _NoSpan:
    if tracer is None:
        return _NOOP
    parent = _current()
    if parent is not None and not parent.sampled:
        # An unsampled request: no span object, no attributes, no context change for its stages.
        return _NOOP
    made = tracer.start(name, kind, parent, attributes)
    if isinstance(made, RecordingSpan):
        return _Scope(made, True)
    # A new trace the sampler dropped: current all the same, so what it calls is told so (traceparent).
    return _Unsampled(made)


def span(name: str, attributes: Mapping[str, Any] | None = None) -> _Scope | _Unsampled | _NoSpan:
    """A child span of the current one around a `with` block; a shared no-op while tracing is off."""
    return _child(name, attributes, INTERNAL)


def client_span(name: str, attributes: Mapping[str, Any]) -> _Scope | _Unsampled | _NoSpan:
    """A CLIENT span (a call to another server) that records `error.type` when the block raises."""
    return _child(name, attributes, CLIENT)


def detached_span(name: str, attributes: Mapping[str, Any] | None = None) -> _Scope | _NoSpan:
    """A child span of the current one that is not made current, ended by its `end(exc)`: for a wait
    across a generator's yields, where a `with` block would leak into the consumer's context."""
    if tracer is None:
        return _NOOP
    parent = _current()
    if parent is not None and not parent.sampled:
        return _NOOP
    made = tracer.start(name, INTERNAL, parent, attributes)
    return _Scope(made, True) if isinstance(made, RecordingSpan) else _NOOP


def set_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current span (nothing while tracing is off or the trace is not sampled)."""
    if tracer is None:
        return
    current = _current()
    if current is not None:
        current.set_attribute(key, value)


def inject(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus the current span's W3C traceparent (the same mapping while tracing is off)."""
    if tracer is None:
        return headers
    current = _current()
    if current is None:
        return headers
    carried = dict(headers)
    carried[_TRACEPARENT] = current.traceparent()
    if current.tracestate:
        carried[_TRACESTATE] = current.tracestate
    return carried


def traceparent() -> str | None:
    """The current span's traceparent header value, to carry it through a queue or a store."""
    if tracer is None:
        return None
    current = _current()
    return None if current is None else current.traceparent()


def linked_span(
    name: str, parents: str | Sequence[str] | None, attributes: Mapping[str, Any] | None = None
) -> _Scope | _Unsampled | _NoSpan:
    """A span in a trace of its own, linked to the spans `parents` (traceparent values) when given."""
    if tracer is None:
        return _NOOP
    links = []
    for parent in [parents] if isinstance(parents, str) else parents or ():
        linked = span_recorder.extract(parent)
        if linked is not None:
            links.append((linked.trace_id, linked.span_id, int(linked.sampled)))
    # A root: the work is not part of the requests that asked for it (a job's submit was answered long
    # ago; a commit serves several publishes).
    made = tracer.start(name, INTERNAL, None, attributes, tuple(links))
    if isinstance(made, RecordingSpan):
        return _Scope(made, False)
    # Not sampled: still the current span, so what it calls carries its (unsampled) traceparent.
    return _Unsampled(made)


class _Unsampled:
    """An unsampled root as the current span for a `with` block (nothing recorded, ids carried on)."""

    __slots__ = ("span", "token")

    def __init__(self, span: SpanContext) -> None:
        self.span = span

    def __enter__(self) -> SpanContext:
        self.token = span_recorder.current.set(self.span)
        return self.span

    def __exit__(self, *exc: object) -> None:
        span_recorder.current.reset(self.token)


def _error_type(exc: BaseException) -> str:
    """The status the other server answered, else the status we answer for it, else the error's class."""
    for name in ("upstream_status", "status"):
        status = getattr(exc, name, None)
        if isinstance(status, int) and status >= 400:
            return str(status)
    return type(exc).__qualname__


@functools.lru_cache(maxsize=256)
def _server(url: str) -> tuple[tuple[str, Any], ...]:
    """`server.address` (and `server.port`) of an upstream URL, parsed once per URL."""
    where = urlsplit(url)
    found: tuple[tuple[str, Any], ...] = (("server.address", where.hostname or ""),)
    return found if where.port is None else (*found, ("server.port", where.port))


def genai_request(provider: str, model: str, url: str, messages: Any = None) -> dict[str, Any]:
    """The GenAI semantic conventions' attributes of a chat request to `url` (messages only if captured)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **dict(_server(url)),
    }
    if capture_content and messages is not None:
        import orjson

        attributes["gen_ai.input.messages"] = orjson.dumps(list(messages)).decode()
    return attributes


def genai_response(
    current: SpanContext | None,
    model: str,
    finish_reason: str,
    usage: Mapping[str, int] | None,
    content: str = "",
) -> None:
    """Record an answer's model, finish reason, token counts (and text, if captured) on `current`."""
    if current is None or not current.sampled:
        return
    current.set_attribute("gen_ai.response.model", model)
    current.set_attribute("gen_ai.response.finish_reasons", (finish_reason,))
    if usage:
        if "prompt_tokens" in usage:
            current.set_attribute("gen_ai.usage.input_tokens", usage["prompt_tokens"])
        if "completion_tokens" in usage:
            current.set_attribute("gen_ai.usage.output_tokens", usage["completion_tokens"])
    if capture_content:
        import orjson

        message = {"role": "assistant", "content": content, "finish_reason": finish_reason}
        current.set_attribute("gen_ai.output.messages", orjson.dumps([message]).decode())


def traced_route(route: Handler, label: str) -> Handler:
    """`route` inside a SERVER span named `METHOD route`, a child of the caller's traceparent if any."""
    sampler = tracer
    assert sampler is not None
    start, extract, current = sampler.start, span_recorder.extract, span_recorder.current
    route_attr = {} if label.startswith("unmatched") else {"http.route": label}

    @functools.wraps(route)
    async def traced(request: web.Request) -> web.StreamResponse:
        headers = request.headers
        parent = extract(headers[_TRACEPARENT], headers.get(_TRACESTATE)) if _TRACEPARENT in headers else None
        made = start("", SERVER, parent, None)
        if not made.sampled:
            # Not sampled: no attributes, no span kept; current only so that its calls carry the decision.
            token = current.set(made)
            try:
                return await route(request)
            finally:
                current.reset(token)
        assert isinstance(made, RecordingSpan)
        method = request.method
        made.name = f"{method} {label}" if route_attr else method
        made.attributes = {
            "http.request.method": method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            **route_attr,
        }
        token = current.set(made)
        try:
            response = await route(request)
        except BaseException as exc:
            made.set_status(ERROR, type(exc).__name__)
            made.end()
            raise
        finally:
            current.reset(token)
        status = response.status
        made.attributes["http.response.status_code"] = status
        if status >= 500:
            made.attributes["error.type"] = str(status)
            made.status = ERROR
        made.end()
        return response

    return traced


def traced_auth(check: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`check(request, ...)` inside an `auth` child span when the request presents a credential."""
    assert tracer is not None
    from llmkit.core.auth import credential_of

    @functools.wraps(check)
    async def traced(request: web.Request, *args: Any) -> Any:
        # Nothing to verify, nothing worth a span (a request with no key is let in or refused at once).
        if credential_of(request.headers) is None or not recording():
            return await check(request, *args)
        assert tracer is not None
        made = tracer.start("auth", INTERNAL, _current(), None)
        # A refusal is an answer, not a failure of the span: ERROR status only, no error.type.
        with _Scope(made, False) if isinstance(made, RecordingSpan) else _Unsampled(made):
            return await check(request, *args)

    return traced
