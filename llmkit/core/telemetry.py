"""OpenTelemetry tracing for every llmkit server: lazy setup, span helpers (GenAI ones too), traceparent.

While tracing is off `tracer` stays None and nothing here imports OpenTelemetry: every hook checks that
one module attribute first (a server's tracing is a property of its process, like its log handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp import web
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from llmkit.settings import TelemetrySettings

# Set by configure() when tracing is on; None otherwise.
tracer: Tracer | None = None
# Whether prompts and answers may go into spans (telemetry.capture_content).
capture_content = False
_provider: TracerProvider | None = None
_propagator: Any = None
# opentelemetry.trace.get_current_span once configure() has imported it.
_current_span: Callable[[], Any] = type(None)

# The exporter gives up on a batch after this long (the collector down or hanging): spans are dropped,
# requests never wait for it (the BatchSpanProcessor exports from its own thread).
EXPORT_TIMEOUT_S = 2.0
# Spans waiting for export at most; past it new ones are dropped rather than held in memory.
MAX_QUEUE = 4096
_NOOP = contextlib.nullcontext()
# While the collector is down the exporter logs two lines per batch; one a minute says as much.
EXPORT_LOG_INTERVAL_S = 60.0

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]
_TRACEPARENT = "traceparent"


class _Sparse(logging.Filter):
    """Lets one record through per `interval` seconds, drops the others."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last = -interval

    def filter(self, record: logging.LogRecord) -> bool:
        if record.created - self.last < self.interval:
            return False
        self.last = record.created
        record.msg = f"tracing: {record.msg} (spans are dropped while export fails; said once a minute)"
        return True


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: `{endpoint}/v1/traces`, or the endpoint itself when it already ends so."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def configure(settings: TelemetrySettings, service: str, version: str = "") -> None:
    """Start tracing this process as `service` when telemetry.enabled is on (a no-op otherwise)."""
    global tracer, capture_content, _provider, _propagator, _current_span
    if not settings.enabled:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    url = traces_url(settings.otlp_endpoint)
    if urlsplit(url).port == 4317:
        # The seed's example names the gRPC port; the collector's OTLP/HTTP port is 4318.
        logging.getLogger(__name__).warning(
            "tracing: %s is the OTLP gRPC port; llmkit exports OTLP/HTTP (usually port 4318)", url
        )
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "deployment.environment.name": settings.environment,
            # Which worker of a pre-forked server (configure runs in each, after the fork).
            "process.pid": os.getpid(),
        }
    )
    # Parent-based: a request whose caller sampled its trace is traced; a new trace with sampling_rate.
    sampler = ParentBased(TraceIdRatioBased(settings.sampling_rate))
    # shutdown_on_exit off: forked workers leave with os._exit; close() flushes instead, at app cleanup.
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=MAX_QUEUE,
            schedule_delay_millis=500,
            export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
        )
    )
    logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").addFilter(
        _Sparse(EXPORT_LOG_INTERVAL_S)
    )
    _provider, _propagator, _current_span = provider, TraceContextTextMapPropagator(), get_current_span
    capture_content = settings.capture_content
    tracer = provider.get_tracer("llmkit", version)


async def close(app: web.Application | None = None) -> None:
    """Export what is left and stop tracing (an app cleanup hook; the export runs off the loop)."""
    await asyncio.to_thread(shutdown)


def shutdown() -> None:
    """Export what is left (waiting at most the export timeout) and stop tracing."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def recording() -> bool:
    """Whether a span made now would be kept: tracing is on and the current trace is sampled (or there
    is none yet, and the sampler decides)."""
    if tracer is None:
        return False
    current = _current_span()
    # An unsampled request's spans are dropped anyway: its children are not even made.
    return bool(current.is_recording() or not current.get_span_context().is_valid)


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one around a `with` block; a shared no-op while tracing is off."""
    if not recording():
        return _NOOP
    return _span(name, attributes, None)


def set_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current span (nothing while tracing is off)."""
    if tracer is None:
        return
    _current_span().set_attribute(key, value)


def inject(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus the current span's W3C traceparent (the same mapping while tracing is off)."""
    if tracer is None:
        return headers
    carried = dict(headers)
    _propagator.inject(carried)
    return carried


def traceparent() -> str | None:
    """The current span's traceparent header value, to carry it through a queue or a store."""
    if tracer is None:
        return None
    carried: dict[str, str] = {}
    _propagator.inject(carried)
    return carried.get("traceparent")


def linked_span(
    name: str, parents: str | Sequence[str] | None, attributes: Mapping[str, Any] | None = None
) -> Any:
    """A span in a trace of its own, linked to the spans `parents` (traceparent values) when given."""
    if tracer is None:
        return _NOOP
    from opentelemetry import context, trace

    links = []
    for parent in [parents] if isinstance(parents, str) else parents or ():
        linked = trace.get_current_span(_propagator.extract({"traceparent": parent})).get_span_context()
        if linked.is_valid:
            links.append(trace.Link(linked))
    # A root: the work is not part of the requests that asked for it (a job's submit was answered long
    # ago; a commit serves several publishes).
    return tracer.start_as_current_span(
        name, context=context.Context(), links=links, attributes=attributes, record_exception=False
    )


def client_span(name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Span | None]:
    """A CLIENT span (a call to another server) that records `error.type` when the block raises."""
    if not recording():
        return _NOOP
    from opentelemetry.trace import SpanKind

    return _span(name, attributes, SpanKind.CLIENT)


@contextlib.contextmanager
def _span(name: str, attributes: Mapping[str, Any] | None, kind: Any) -> Iterator[Span]:
    assert tracer is not None
    from opentelemetry.trace import SpanKind, StatusCode

    with tracer.start_as_current_span(
        name,
        kind=kind or SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            # The class only: an error's text may quote a prompt or an upstream URL.
            current.set_attribute("error.type", _error_type(exc))
            current.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


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
    current: Span | None,
    model: str,
    finish_reason: str,
    usage: Mapping[str, int] | None,
    content: str = "",
) -> None:
    """Record an answer's model, finish reason, token counts (and text, if captured) on `current`."""
    if current is None:
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
    assert tracer is not None
    from opentelemetry.trace import SpanKind, StatusCode

    start, extract = tracer.start_as_current_span, _propagator.extract
    server_kind, error = SpanKind.SERVER, StatusCode.ERROR
    route_attr = {} if label.startswith("unmatched") else {"http.route": label}

    @functools.wraps(route)
    async def traced(request: web.Request) -> web.StreamResponse:
        method = request.method
        name = f"{method} {label}" if route_attr else method
        attributes = {
            "http.request.method": method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            **route_attr,
        }
        headers = request.headers
        with start(
            name,
            # No traceparent: a new trace (extracting nothing costs as much as extracting one).
            context=extract(headers) if _TRACEPARENT in headers else None,
            kind=server_kind,
            attributes=attributes,
            record_exception=False,
        ) as current:
            response = await route(request)
            status = response.status
            current.set_attribute("http.response.status_code", status)
            if status >= 500:
                current.set_attribute("error.type", str(status))
                current.set_status(error)
            return response

    return traced


def traced_auth(check: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`check(request, ...)` inside an `auth` child span when the request presents a credential."""
    assert tracer is not None
    from llmkit.core.auth import credential_of

    start = tracer.start_as_current_span

    @functools.wraps(check)
    async def traced(request: web.Request, *args: Any) -> Any:
        # Nothing to verify, nothing worth a span (a request with no key is let in or refused at once).
        if credential_of(request.headers) is None or not recording():
            return await check(request, *args)
        with start("auth", record_exception=False):
            return await check(request, *args)

    return traced
