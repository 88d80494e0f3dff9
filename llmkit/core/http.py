"""What every llmkit server shares over HTTP: request ids, JSON errors, limits, access log, common routes."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import istr
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llmkit import __version__
from llmkit.core import openapi as openapi_spec
from llmkit.core import telemetry
from llmkit.core.access_log import access_log
from llmkit.core.auth import ANONYMOUS, ANY, PUBLIC, AuthError, Guard, Identity
from llmkit.core.connections import describe_bad_request
from llmkit.core.http_metrics import HttpMetrics
from llmkit.core.ids import fresh_hex
from llmkit.core.openapi import HEALTH_DOC, METRICS_DOC, OPENAPI_DOC, STATS_DOC, openapi
from llmkit.core.workers import ALL, PEERS_KEY, SELF, merge_metrics, merge_stats
from llmkit.errors import BackendError, CircuitOpen, LlmkitError, QueueFull, RateLimited, UpstreamError
from llmkit.settings import ServerSettings

REQUEST_ID_HEADER = "X-Request-ID"
# A pre-folded header name: multidict skips case-folding it on every response.
_REQUEST_ID_ISTR = istr(REQUEST_ID_HEADER)
# Ids we accept from clients: short and free of anything a log parser or header could choke on.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Per-task request id for log records; a ContextVar is per request, not shared state.
request_id_var: ContextVar[str] = ContextVar("llmkit_request_id", default="-")


def request_key(name: str, kind: type) -> Any:
    """A typed per-request key: aiohttp >= 3.13 warns on str keys; older versions lack RequestKey."""
    return web.RequestKey(name, kind) if hasattr(web, "RequestKey") else name


logger = logging.getLogger("llmkit.http")

StatsProvider = Callable[[], Awaitable[dict[str, Any]]]
DeepHealth = Callable[[], Awaitable[dict[str, Any]]]
# (status, code, message, extra fields) -> the JSON body of an error response.
ErrorFormatter = Callable[[int, str, str, Mapping[str, Any]], Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error a handler raises to answer `status` with a JSON body in the route's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def json_error(status: int, code: str, message: str, **extra: Any) -> ApiError:
    """An `ApiError` to raise: `raise json_error(404, "model_not_found", "no model 'x'; known: a, b")`."""
    return ApiError(status, code, message, **extra)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def default_error_body(status: int, code: str, message: str, extra: Mapping[str, Any]) -> Any:
    """`{"error": {"code", "message", ...extra}}`: the shape of every non-OpenAI route."""
    return {"error": {"code": code, "message": message, **extra}}


def openai_error_body(status: int, code: str, message: str, extra: Mapping[str, Any]) -> Any:
    """`{"error": {"message", "type", "param", "code"}}`: the shape OpenAI clients parse."""
    kind = extra.get("type") or ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": extra.get("param"), "code": code}}


@dataclass
class ServiceInfo:
    """Who this server is, for /health and /openapi.json."""

    name: str
    version: str = __version__
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    # Fields a system's /health answers besides llmkit's (the aggregator keeps the seed's "message").
    health: dict[str, Any] = field(default_factory=dict)
    # What `GET /health?deep=1` adds: checks of what the server depends on; "ok": False answers 503.
    deep_health: DeepHealth | None = None
    # What every `GET /health` asks (cheap, local or one round trip): "ok": False answers 503 with its fields.
    live_health: DeepHealth | None = None
    # Set on SIGTERM for server.stop_grace_s before the listener closes: /health answers 503 "draining".
    stopping: bool = False


SERVICE_KEY = web.AppKey("llmkit_service", ServiceInfo)
GUARD_KEY = web.AppKey("llmkit_guard", Guard)
SETTINGS_KEY = web.AppKey("llmkit_server_settings", ServerSettings)
METRICS_KEY = web.AppKey("llmkit_http_metrics", HttpMetrics)
STATS_PROVIDER_KEY = web.AppKey[StatsProvider | None]("llmkit_stats_provider")
# (path prefix, formatter), longest prefix first; "" is the app-wide default.
ERROR_FORMATS_KEY = web.AppKey[list[tuple[str, ErrorFormatter]]]("llmkit_error_formats")
# The same prefixes with the name of their error schema in /openapi.json's components.
ERROR_SHAPES_KEY = web.AppKey[list[tuple[str, str]]]("llmkit_error_shapes")
# Component schemas a system adds to its /openapi.json (its error shapes, big request schemas).
OPENAPI_SCHEMAS_KEY = web.AppKey[dict[str, Any]]("llmkit_openapi_schemas")


def set_error_format(
    app: web.Application,
    formatter: ErrorFormatter,
    prefix: str = "",
    schema: tuple[str, dict[str, Any]] | None = None,
) -> None:
    """Use `formatter` for errors on paths under `prefix` (e.g. "/v1" -> OpenAI's shape).

    `schema` is (name, JSON schema) of its bodies for /openapi.json; llmkit's two shapes need none.
    """
    formats = [(p, f) for p, f in app[ERROR_FORMATS_KEY] if p != prefix]
    formats.append((prefix, formatter))
    formats.sort(key=lambda item: len(item[0]), reverse=True)
    app[ERROR_FORMATS_KEY][:] = formats
    if schema is not None:
        name = schema[0]
        app[OPENAPI_SCHEMAS_KEY][name] = schema[1]
    else:
        name = "OpenAIError" if formatter is openai_error_body else "Error"
    shapes = [(p, n) for p, n in app[ERROR_SHAPES_KEY] if p != prefix]
    shapes.append((prefix, name))
    shapes.sort(key=lambda item: len(item[0]), reverse=True)
    app[ERROR_SHAPES_KEY][:] = shapes


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A JSON error response in the shape registered for the request's path."""
    path = request.path
    formatter: ErrorFormatter = default_error_body
    for prefix, candidate in request.config_dict.get(ERROR_FORMATS_KEY, ()):
        if path.startswith(prefix):
            formatter = candidate
            break
    return json_response(formatter(status, code, message, extra), status=status, headers=headers)


def request_id_of(request: web.Request) -> str:
    """The id of the request being handled (or "-" outside one): its context holds it, see add_route."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` so log formats can show which request a line belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def _code_of(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"


def _http_exception_response(request: web.Request, exc: web.HTTPException, limit: int) -> web.Response:
    status, reason = exc.status, exc.reason
    code, message = _code_of(reason), exc.text or ""
    # aiohttp's default text is "404: Not Found"; say what the client should change instead.
    default = message == f"{status}: {reason}"
    if status == 413:
        code, message = "body_too_large", _too_large_message(None, limit)
    elif isinstance(exc, web.HTTPMethodNotAllowed) and default:
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} is not allowed on {request.path}; allowed: {allowed}"
    elif status == 404 and default:
        message = f"no route for {request.method} {request.path}; GET /openapi.json lists the routes"
    elif default:
        message = reason
    headers = {k: v for k, v in exc.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)}
    return error_response(request, status, code, message, headers)


def _llmkit_error_response(request: web.Request, exc: LlmkitError) -> web.Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, AuthError):
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="llmkit"'
        return error_response(request, exc.status, exc.code, str(exc), headers)
    if isinstance(exc, RateLimited):
        # A limit may say more (a tenant quota: which one, its x-ratelimit-* headers).
        headers.update(getattr(exc, "headers", {}))
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        code = getattr(exc, "code", "rate_limited")
        return error_response(request, 429, code, str(exc), headers, **getattr(exc, "extra", {}))
    if isinstance(exc, QueueFull):
        return error_response(request, 503, "queue_full", str(exc), {"Retry-After": "1"})
    if isinstance(exc, CircuitOpen):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return error_response(request, 503, "circuit_open", str(exc), headers)
    if isinstance(exc, UpstreamError):
        return error_response(request, exc.status, "upstream_error", str(exc))
    if isinstance(exc, BackendError):
        return error_response(request, 503, "backend_unavailable", str(exc))
    return None


def _too_large_message(size: int | None, limit: int) -> str:
    got = f" is {size} bytes;" if size is not None else " is too large;"
    return f"request body{got} the limit is {limit} bytes ({limit / 1_048_576:g} MB, server.max_body_mb)"


def _error_to_response(request: web.Request, exc: Exception, limit: int) -> web.Response:
    if isinstance(exc, ApiError):
        return error_response(request, exc.status, exc.code, exc.message, exc.headers, **exc.extra)
    if isinstance(exc, web.HTTPException):
        return _http_exception_response(request, exc, limit)
    if isinstance(exc, LlmkitError) and (response := _llmkit_error_response(request, exc)) is not None:
        return response
    if isinstance(exc, HttpProcessingError):
        # A body the parser refused (bad chunked encoding): the client's fault, no traceback in our log.
        reason = describe_bad_request(exc)
        logger.info("bad request body in %s %s: %s", request.method, request.path, reason)
        return error_response(request, 400, "bad_request", f"malformed request body: {reason}")
    rid = request_id_of(request)
    logger.exception("unhandled error in %s %s (request id %s)", request.method, request.path, rid)
    return error_response(request, 500, "internal_error", f"internal server error; request id {rid}")


_ROUTE_MARK = "__llmkit_route__"
# Every path, a newline in it too (`.*` stops at one, and aiohttp then answers a text/plain 404).
ANY_PATH = "/{path:[\\s\\S]*}"
UNMATCHED = "unmatched"


class RouteWrapper:
    """Wraps each route handler in what every llmkit request gets: an id, JSON errors, the body limit,
    metrics and the access log. One frame around the handler, where an aiohttp middleware costs three.
    """

    def __init__(self, settings: ServerSettings, metrics: HttpMetrics, guard: Guard) -> None:
        self.limit = int(settings.max_body_mb * 1_048_576)
        self.log_access = settings.access_log
        self.metrics = metrics
        self.guard = guard

    def wrap(self, handler: Handler, label: str, scope: str = ANY, forms: bool = False) -> Handler:
        """`handler` inside llmkit's request handling; `label` names its route in the metrics, `scope`
        what a caller's credential must allow and `forms` whether it reads form-typed JSON (core.auth)."""
        limit, log_access, metrics = self.limit, self.log_access, self.metrics
        check: Callable[[web.Request, str, bool], Awaitable[Identity]] = self.guard.check
        traced = telemetry.tracer is not None and not label.startswith(("/health", "/metrics"))
        if traced and scope != PUBLIC:
            check = telemetry.traced_auth(check)
        log_request = access_log.add
        new_id, valid_id, observe = fresh_hex, _REQUEST_ID_RE.fullmatch, metrics.route(label).observe
        clock = time.perf_counter

        @functools.wraps(handler)
        async def llmkit_route(request: web.Request) -> web.StreamResponse:
            incoming = request.headers.get(_REQUEST_ID_ISTR)
            rid = incoming if incoming is not None and valid_id(incoming) else new_id()
            token = request_id_var.set(rid)
            start = clock()
            status = 499  # what gets recorded when the client goes away and the handler is cancelled
            metrics.active += 1
            try:
                try:
                    # Refuse before reading: Content-Length tells us now, client_max_size only once read.
                    size = request.content_length if request.body_exists else None
                    if size is not None and size > limit:
                        raise ApiError(413, "body_too_large", _too_large_message(size, limit))
                    request[IDENTITY_KEY] = await check(request, scope, forms)
                    response = await handler(request)
                except Exception as exc:
                    if isinstance(exc, web.HTTPException) and exc.status < 400:
                        status = exc.status
                        raise
                    response = _error_to_response(request, exc, limit)
                status = response.status
                if not response.prepared:
                    # Here rather than in an on_response_prepare signal, which costs every request a
                    # coroutine; streams that handlers prepare get it from stream_response().
                    response.headers.setdefault(_REQUEST_ID_ISTR, rid)
                return response
            finally:
                metrics.active -= 1
                elapsed = clock() - start
                observe(request.method, status, elapsed)
                if log_access:
                    log_request(request.method, request.path, status, elapsed, rid)
                request_id_var.reset(token)

        # Decided when the route is added: an untraced server's requests never look at tracing again.
        route = telemetry.traced_route(llmkit_route, label) if traced else llmkit_route
        setattr(route, _ROUTE_MARK, True)
        return route


WRAPPER_KEY = web.AppKey("llmkit_route_wrapper", RouteWrapper)
# The caller, as the route's Guard.check found it: handlers read it with identity_of(request).
IDENTITY_KEY = request_key("llmkit_identity", Identity)


def identity_of(request: web.Request) -> Identity:
    """Who sent the request (ANONYMOUS when no credential was needed or presented)."""
    identity: Identity = request.get(IDENTITY_KEY, ANONYMOUS)
    return identity


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, *, scope: str = ANY, forms: bool = False
) -> None:
    """Serve `method path` with `handler` inside llmkit's request handling (GET answers HEAD too).

    `scope` is what the caller's credential must allow (core.auth: PUBLIC, ANY, chat, search, admin);
    `forms` lets a caller with no credential send its JSON as a form or text body (see Guard.check).

    Every route of an app from create_base_app is added here: one added with app.router directly would
    miss ids, JSON errors and metrics, so the app refuses to start with one.
    """
    resource = app.router.add_resource(path)
    wrapped = app[WRAPPER_KEY].wrap(handler, resource.canonical, scope, forms)
    if method == hdrs.METH_GET:
        resource.add_route(hdrs.METH_HEAD, wrapped)
    resource.add_route(method, wrapped)


def _allowed_methods(app: web.Application, path: str) -> set[str]:
    """The methods of the routes whose pattern matches `path`."""
    allowed: set[str] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        if info.get("path") == path or (pattern is not None and pattern.fullmatch(path)):
            allowed.update(route.method for route in resource if route.method != hdrs.METH_ANY)
    return allowed


async def _unmatched(request: web.Request) -> web.StreamResponse:
    # Every path no route serves ends here, so 404 and 405 come in the JSON shape of the path's routes.
    allowed = _allowed_methods(request.app, request.path)
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def _finish_routes(app: web.Application) -> None:
    """At startup: refuse routes added around add_route, then catch every other path (last, so it
    never shadows a route)."""
    for resource in app.router.resources():
        for route in resource:
            if not getattr(route.handler, _ROUTE_MARK, False):
                raise RuntimeError(
                    f"route {route.method} {resource.canonical} was added with app.router; "
                    "add it with llmkit.core.http.add_route so it gets ids, JSON errors and metrics"
                )
    app.router.add_route(hdrs.METH_ANY, ANY_PATH, app[WRAPPER_KEY].wrap(_unmatched, UNMATCHED, PUBLIC))


def stream_response(request: web.Request, headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """A StreamResponse for a handler to prepare itself, carrying the request id like every other answer."""
    response = web.StreamResponse(headers=headers)
    response.headers[_REQUEST_ID_ISTR] = request_id_var.get()
    return response


@openapi(**HEALTH_DOC)
async def handle_health(request: web.Request) -> web.Response:
    """Liveness: service name, version, pid and uptime; `?deep=1` also checks what the server depends on."""
    info = request.app[SERVICE_KEY]
    uptime = round(time.monotonic() - info.started, 3)
    body = {"status": "ok", "service": info.name, "version": info.version, "pid": os.getpid()}
    # A system's own fields win: the orchestrator answers the seed's "status": "healthy".
    body = {**body, "uptime": uptime, "started_at": info.started_at, **info.health}
    if info.stopping:
        message = "shutting down: still answering, but send new requests to another replica"
        return json_response({**body, "status": "draining", "message": message}, status=503)
    if info.live_health is not None:
        live = await info.live_health()
        if not live.get("ok", True):
            problems = {key: value for key, value in live.items() if key != "ok"}
            return json_response({**body, "status": "unhealthy", **problems}, status=503)
    if info.deep_health is None or request.query.get("deep", "0").lower() in ("0", "false", "no", ""):
        return json_response(body)
    checks = await info.deep_health()
    if checks.get("ok", True):
        return json_response({**body, "checks": checks})
    return json_response({**body, "status": "unhealthy", "checks": checks}, status=503)


def own_only(request: web.Request) -> bool:
    """Whether /stats or /metrics answers for this worker alone: `?workers=self`, or no other workers."""
    asked = request.query.get("workers", ALL)
    if asked not in (ALL, SELF):
        raise ApiError(400, "invalid_parameter", f"workers must be {ALL} or {SELF}; got {asked!r}")
    return asked == SELF or request.app.get(PEERS_KEY) is None


@openapi(**STATS_DOC)
async def handle_stats(request: web.Request) -> web.Response:
    """Service numbers from the app's stats provider, plus HTTP request counts under "http".

    With several workers, the figures of all of them: counts summed, ratios averaged, and each worker's
    own numbers under `workers.each` (`?workers=self`: only the worker that answers)."""
    provider = request.app[STATS_PROVIDER_KEY]
    data = dict(await provider()) if provider is not None else {}
    metrics = request.app[METRICS_KEY]
    # The in-flight gauge counts this very request; subtract it so an idle server reads 0.
    in_flight = metrics.active - 1
    data.setdefault("http", {"requests": metrics.total, "errors_5xx": metrics.errors, "in_flight": in_flight})
    peers = request.app.get(PEERS_KEY)
    if peers is not None:
        data.setdefault("pid", os.getpid())  # which worker's numbers these are
    if own_only(request):
        return json_response(data)
    assert peers is not None
    each = [data]
    for _, status, body in await peers.ask(request, f"/stats?workers={SELF}"):
        if status == 200:
            each.append(orjson.loads(body))
    merged = merge_stats(each)
    merged["workers"] = {"count": peers.count, "answered": len(each), "each": each}
    return json_response(merged)


@openapi(**METRICS_DOC)
async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry (every worker's, labelled `worker`)."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    if not own_only(request):
        peers = request.app[PEERS_KEY]
        answers = await peers.ask(request, f"/metrics?workers={SELF}")
        texts = [(slot, text.decode()) for slot, status, text in answers if status == 200]
        body = merge_metrics([(peers.slot, body.decode()), *texts])
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


_VIEW_METHODS = ("get", "post", "put", "patch", "delete")


def _error_shape(app: web.Application, path: str) -> str:
    for prefix, shape in app[ERROR_SHAPES_KEY]:
        if path.startswith(prefix):
            return shape
    return "Error"


def _routes(app: web.Application) -> Iterator[tuple[str, str, Any]]:
    """(method, path, handler) of every route."""
    for resource in app.router.resources():
        for route in resource:
            handler = route.handler
            if route.method == hdrs.METH_ANY and isinstance(handler, type) and issubclass(handler, web.View):
                for name in _VIEW_METHODS:
                    if hasattr(handler, name):
                        yield name.upper(), resource.canonical, getattr(handler, name)
            elif route.method not in (hdrs.METH_HEAD, hdrs.METH_ANY):
                yield route.method, resource.canonical, handler


def openapi_document(app: web.Application) -> dict[str, Any]:
    """An OpenAPI 3 document of the app's routes: summaries from docstrings, the rest from @openapi."""
    info = app[SERVICE_KEY]
    return openapi_spec.document(
        f"llmkit {info.name}",
        info.version,
        _routes(app),
        lambda path: _error_shape(app, path),
        app[OPENAPI_SCHEMAS_KEY],
        app,
    )


@openapi(**OPENAPI_DOC)
async def handle_openapi(request: web.Request) -> web.Response:
    """This document: every route of the server."""
    return json_response(openapi_document(request.app))


def create_base_app(
    name: str,
    settings: ServerSettings,
    stats: StatsProvider | None = None,
    *,
    error_format: ErrorFormatter = default_error_body,
    registry: CollectorRegistry | None = None,
    health: Mapping[str, Any] | None = None,
    deep_health: DeepHealth | None = None,
    cancel_on_disconnect: bool = False,
    guard: Guard | None = None,
) -> web.Application:
    """An app with llmkit's request handling and GET /health, /stats, /metrics, /openapi.json.

    Add routes with `add_route(app, method, path, handler)`. With `cancel_on_disconnect` a handler is
    cancelled when its client goes away (served by core.serve; tests pass it to their server too).
    """
    registry = registry or CollectorRegistry(auto_describe=True)
    http_metrics = HttpMetrics(registry)
    # No aiohttp middleware: add_route wraps each handler instead (see RouteWrapper).
    # Chunked bodies have no Content-Length; aiohttp enforces client_max_size while reading them.
    app = web.Application(client_max_size=int(settings.max_body_mb * 1_048_576))
    app[SERVICE_KEY] = ServiceInfo(name, health=dict(health or {}), deep_health=deep_health)
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = http_metrics
    app[STATS_PROVIDER_KEY] = stats
    app[ERROR_FORMATS_KEY] = []
    app[ERROR_SHAPES_KEY] = []
    app[OPENAPI_SCHEMAS_KEY] = {}
    set_error_format(app, error_format)
    # Without a guard of its own a server still refuses what a browser could send it cross-site.
    app[GUARD_KEY] = guard or Guard(admin_setting="an admin key")
    app[WRAPPER_KEY] = RouteWrapper(settings, http_metrics, app[GUARD_KEY])
    app[CANCEL_ON_DISCONNECT_KEY] = cancel_on_disconnect
    app.on_startup.append(_finish_routes)
    app.on_cleanup.append(_flush_access_log)
    add_route(app, "GET", "/health", handle_health, scope=PUBLIC)
    add_route(app, "GET", "/stats", handle_stats)
    add_route(app, "GET", "/metrics", handle_metrics)
    add_route(app, "GET", "/openapi.json", handle_openapi)
    return app


CANCEL_ON_DISCONNECT_KEY = web.AppKey("llmkit_cancel_on_disconnect", bool)


async def _flush_access_log(app: web.Application) -> None:
    # The lines of the last requests are written before the server exits.
    access_log.flush()


def server_settings_of(app: web.Application) -> ServerSettings:
    """The server settings an app was made with (create_base_app), or the defaults for a bare app."""
    return app.get(SETTINGS_KEY) or ServerSettings()


def cancels_on_disconnect(app: web.Application) -> bool:
    """Whether the app wants its handlers cancelled when their client disconnects."""
    return bool(app.get(CANCEL_ON_DISCONNECT_KEY, False))


# Content types a JSON route reads as JSON when it is lenient: what `curl -d` sends without -H.
_LENIENT_TYPES = frozenset({"application/x-www-form-urlencoded", "text/plain", "application/octet-stream"})


async def read_body(request: web.Request, *, lenient: bool = False) -> bytes:
    """The raw request body of a JSON route: 415 for another content type, 400 when it is empty.

    `lenient` also takes the types `curl -d` and `fetch` send by default, for routes whose documented
    examples omit the Content-Type header.
    """
    raw_type = request.headers.get(hdrs.CONTENT_TYPE)
    # The usual exact value needs no parsing; anything else is parsed (parameters, case, +json types).
    if (
        raw_type is not None
        and raw_type != "application/json"
        and not (lenient and request.content_type in _LENIENT_TYPES)
    ):
        ctype = request.content_type
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise ApiError(
                415, "unsupported_media_type", f"expected Content-Type: application/json; got {ctype}"
            )
    body = await request.read()
    if not body.strip():
        raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    return body


def parse_json(body: bytes, *, object_only: bool = True) -> Any:
    """`body` parsed as JSON; 400 for bad JSON (or, with `object_only`, anything but an object)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if object_only and not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"request body must be a JSON object; got {type(data).__name__}")
    return data


async def read_json(request: web.Request, *, object_only: bool = True, lenient: bool = False) -> Any:
    """The request body parsed as JSON; 415 for another content type, 400 for bad JSON (or a non-object)."""
    return parse_json(await read_body(request, lenient=lenient), object_only=object_only)
