"""llmkit.core.http: request ids, JSON errors, body limit, access log and the common routes."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.core.http import (
    METRICS_KEY,
    REQUEST_ID_HEADER,
    add_route,
    create_base_app,
    json_error,
    json_response,
    openai_error_body,
    openapi,
    read_json,
    request_id_of,
    set_error_format,
    stream_response,
)
from llmkit.core.openapi import json_body
from llmkit.errors import QueueFull, RateLimited
from llmkit.settings import ServerSettings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


async def echo(request: web.Request) -> web.Response:
    """Echo a JSON object."""
    return json_response({"got": await read_json(request)})


async def boom(request: web.Request) -> web.Response:
    """Fail with a bug."""
    raise RuntimeError("secret internal detail")


async def whoami(request: web.Request) -> web.Response:
    """The request id the handler sees."""
    return json_response({"request_id": request_id_of(request)})


async def stream(request: web.Request) -> web.StreamResponse:
    """A response prepared inside the handler."""
    response = stream_response(request)
    await response.prepare(request)
    await response.write(b"chunk")
    return response


@openapi(tags=["items"], responses={"200": {"description": "The item."}})
async def get_item(request: web.Request) -> web.Response:
    """Read one item.

    Longer explanation of the item route.
    """
    raise json_error(404, "item_not_found", f"no item {request.match_info['item_id']!r}", item=1)


async def limited(request: web.Request) -> web.Response:
    """Always over the limit."""
    raise RateLimited("too many requests for key k; retry later", retry_after=2.5)


async def full(request: web.Request) -> web.Response:
    """Always full."""
    raise QueueFull("queue is at its capacity of 3", capacity=3)


async def v1_bad(request: web.Request) -> web.Response:
    """An OpenAI-style route rejecting a parameter."""
    raise json_error(400, "model_not_found", "model 'x' does not exist", param="model")


async def provider() -> dict[str, Any]:
    return {"cache": {"hits": 3, "misses": 1}}


def make_app(stats: Any = provider, **server: Any) -> web.Application:
    app = create_base_app("unit", ServerSettings(**server), stats)
    add_route(app, "POST", "/echo", echo)
    add_route(app, "GET", "/boom", boom)
    add_route(app, "GET", "/whoami", whoami)
    add_route(app, "GET", "/stream", stream)
    add_route(app, "GET", "/items/{item_id:\\d+}", get_item)
    add_route(app, "GET", "/limited", limited)
    add_route(app, "GET", "/full", full)
    add_route(app, "POST", "/v1/bad", v1_bad)
    set_error_format(app, openai_error_body, "/v1")
    return app


@pytest.fixture
async def client(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_app())


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


async def test_request_id_is_generated_and_seen_by_the_handler(client: Client) -> None:
    response = await client.get("/whoami")
    rid = response.headers[REQUEST_ID_HEADER]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert (await response.json()) == {"request_id": rid}
    other = await client.get("/whoami")
    assert other.headers[REQUEST_ID_HEADER] != rid


async def test_a_sane_incoming_request_id_is_echoed(client: Client) -> None:
    response = await client.get("/whoami", headers={REQUEST_ID_HEADER: "job-42.retry:1"})
    assert response.headers[REQUEST_ID_HEADER] == "job-42.retry:1"
    assert (await response.json())["request_id"] == "job-42.retry:1"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "<script>"])
async def test_an_insane_incoming_request_id_is_replaced(client: Client, bad: str) -> None:
    response = await client.get("/whoami", headers={REQUEST_ID_HEADER: bad})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers[REQUEST_ID_HEADER])


async def test_streamed_and_error_responses_carry_the_request_id(client: Client) -> None:
    streamed = await client.get("/stream", headers={REQUEST_ID_HEADER: "s1"})
    assert await streamed.read() == b"chunk"
    assert streamed.headers[REQUEST_ID_HEADER] == "s1"
    missing = await client.get("/nowhere", headers={REQUEST_ID_HEADER: "n1"})
    assert missing.headers[REQUEST_ID_HEADER] == "n1"


async def test_unknown_path_is_a_json_404(client: Client) -> None:
    error = await error_of(await client.get("/nowhere"), 404)
    assert error["code"] == "not_found"
    assert "/nowhere" in error["message"]


async def test_a_path_with_a_newline_is_a_json_404_too(client: Client) -> None:
    # `/{path:.*}` stopped at the newline, so aiohttp answered its own text/plain 404 (found by the fuzzer).
    error = await error_of(await client.get("/a%0Ab"), 404)
    assert error["code"] == "not_found"


async def test_wrong_method_is_a_json_405_with_allow(client: Client) -> None:
    response = await client.delete("/echo")
    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "DELETE" in error["message"] and "POST" in error["message"]
    assert response.headers["Allow"] == "POST"


async def test_unhandled_exception_is_a_json_500_logged_with_the_request_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="llmkit.http"):
        response = await client.get("/boom", headers={REQUEST_ID_HEADER: "crash-1"})
    error = await error_of(response, 500)
    assert error["code"] == "internal_error"
    assert "crash-1" in error["message"]
    assert "secret internal detail" not in error["message"]
    assert "Traceback" not in await response.text()
    logged = [r for r in caplog.records if r.name == "llmkit.http"]
    assert logged and "crash-1" in logged[0].getMessage()
    assert logged[0].exc_info is not None


async def test_json_error_carries_code_message_and_extra_fields(client: Client) -> None:
    error = await error_of(await client.get("/items/7"), 404)
    assert error == {"code": "item_not_found", "message": "no item '7'", "item": 1}


async def test_llmkit_errors_map_to_statuses(client: Client) -> None:
    response = await client.get("/limited")
    assert (await error_of(response, 429))["code"] == "rate_limited"
    assert response.headers["Retry-After"] == "3"
    assert (await error_of(await client.get("/full"), 503))["code"] == "queue_full"


async def test_openai_shape_under_its_prefix_only(client: Client) -> None:
    error = await error_of(await client.post("/v1/bad"), 400)
    assert error == {
        "message": "model 'x' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    unmatched = await error_of(await client.get("/v1/nothing"), 404)
    assert set(unmatched) == {"message", "type", "param", "code"}
    assert set(await error_of(await client.get("/nothing"), 404)) == {"code", "message"}


async def test_body_over_the_limit_is_a_json_413_before_reading(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(make_app(max_body_mb=0.001))
    error = await error_of(await client.post("/echo", data=b"x" * 5000), 413)
    assert error["code"] == "body_too_large"
    assert "5000 bytes" in error["message"]
    assert "1048 bytes" in error["message"] and "server.max_body_mb" in error["message"]


async def test_chunked_body_over_the_limit_is_a_json_413(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(make_app(max_body_mb=0.001))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 500

    response = await client.post("/echo", data=chunks(), headers={"Content-Type": "application/json"})
    error = await error_of(response, 413)
    assert error["code"] == "body_too_large"
    assert "server.max_body_mb" in error["message"]


async def test_body_under_the_limit_is_served(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(make_app(max_body_mb=0.001))
    response = await client.post("/echo", json={"a": "b" * 500})
    assert response.status == 200
    assert (await response.json()) == {"got": {"a": "b" * 500}}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "words"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_json", "not valid JSON"),
        (b"", {"Content-Type": "application/json"}, 400, "invalid_json", "empty"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "invalid_json", "JSON object; got list"),
        (b'{"a": 1}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
    ],
)
async def test_read_json_rejects_bad_bodies(
    client: Client, body: bytes, headers: dict[str, str], status: int, code: str, words: str
) -> None:
    error = await error_of(await client.post("/echo", data=body, headers=headers), status)
    assert error["code"] == code
    assert words in error["message"]


async def test_read_json_accepts_json_and_vendor_json(client: Client) -> None:
    for ctype in ("application/json", "application/vnd.llmkit+json", "application/json; charset=utf-8"):
        response = await client.post("/echo", data=b'{"k": [1, 2]}', headers={"Content-Type": ctype})
        assert response.status == 200, ctype
        assert (await response.json()) == {"got": {"k": [1, 2]}}


async def test_health(client: Client) -> None:
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["service"] == "unit"
    assert body["version"]
    assert isinstance(body["pid"], int)
    assert body["uptime"] >= 0


async def test_stats_merges_the_provider_with_http_counts(client: Client) -> None:
    await client.get("/health")
    await client.get("/boom")
    body = await (await client.get("/stats")).json()
    assert body["cache"] == {"hits": 3, "misses": 1}
    assert body["http"] == {"requests": 2, "errors_5xx": 1, "in_flight": 0}


async def test_stats_without_a_provider(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(make_app(stats=None))
    body = await (await client.get("/stats")).json()
    assert body == {"http": {"requests": 0, "errors_5xx": 0, "in_flight": 0}}


async def test_metrics_are_prometheus_text_with_request_counters(client: Client) -> None:
    await client.get("/health")
    await client.get("/items/3")
    await client.get("/nowhere/at/all")
    await client.request("PROPFIND", "/health")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'llmkit_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    # Routes are labelled by pattern, and unmatched paths share one label.
    assert 'route="/items/{item_id}",status="404"' in text
    assert 'route="unmatched",status="404"' in text
    assert "/nowhere/at/all" not in text
    # Methods outside the standard set share one label.
    assert 'method="OTHER",route="unmatched",status="405"' in text
    assert "PROPFIND" not in text
    assert 'llmkit_http_request_duration_seconds_count{method="GET",route="/health"} 1.0' in text
    assert "llmkit_http_requests_in_flight" in text


async def test_each_app_has_its_own_registry(aiohttp_client: MakeClient) -> None:
    first, second = make_app(), make_app()
    assert first[METRICS_KEY].registry is not second[METRICS_KEY].registry
    client = await aiohttp_client(first)
    await client.get("/health")
    assert first[METRICS_KEY].total == 1
    assert second[METRICS_KEY].total == 0


async def test_openapi_lists_routes_with_summaries_and_extra_schema(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "llmkit unit"
    paths = doc["paths"]
    for path in ("/health", "/stats", "/metrics", "/openapi.json", "/echo", "/v1/bad"):
        assert path in paths, path
    assert set(paths["/health"]) == {"get"}  # no HEAD twin
    assert set(paths["/echo"]) == {"post"}
    item = paths["/items/{item_id}"]["get"]
    assert item["summary"] == "Read one item."
    assert item["description"] == "Longer explanation of the item route."
    assert item["tags"] == ["items"]
    assert item["responses"] == {"200": {"description": "The item."}}
    assert item["parameters"][0]["name"] == "item_id"


@openapi(requestBody=json_body({"type": "object"}), errors=[404, 429])
async def documented(request: web.Request) -> web.Response:
    """A documented route."""
    return json_response({})


async def test_openapi_adds_error_answers_in_the_paths_shape(aiohttp_client: MakeClient) -> None:
    app = make_app()
    add_route(app, "POST", "/v1/documented", documented)
    add_route(app, "POST", "/documented", documented)
    doc = await (await (await aiohttp_client(app)).get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"Error", "OpenAIError", "ValidationError"} <= set(schemas)
    for path, shape in (("/documented", "Error"), ("/v1/documented", "OpenAIError")):
        responses = doc["paths"][path]["post"]["responses"]
        # 400, 413 and 415 come with a JSON body; 404 and 429 from errors=[...].
        assert set(responses) == {"200", "400", "404", "413", "415", "429"}, path
        media = responses["404"]["content"]["application/json"]
        assert media["schema"] == {"$ref": f"#/components/schemas/{shape}"}
        assert "Retry-After" in responses["429"]["headers"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


async def test_a_route_added_around_add_route_refuses_to_start() -> None:
    app = make_app()
    app.router.add_get("/bypass", whoami)
    runner = web.AppRunner(app)
    try:
        with pytest.raises(RuntimeError, match=r"(GET|HEAD) /bypass was added with app.router; .*add_route"):
            await runner.setup()
    finally:
        await runner.cleanup()


async def test_access_log_has_method_path_status_duration_and_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llmkit.access"):
        await client.get("/health", headers={REQUEST_ID_HEADER: "log-1"})
    records = [r for r in caplog.records if r.name == "llmkit.access"]
    assert len(records) == 1
    assert re.fullmatch(r"GET /health 200 \d+\.\dms", records[0].getMessage())
    assert records[0].request_id == "log-1"  # type: ignore[attr-defined]


async def test_access_log_can_be_switched_off(
    aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(make_app(access_log=False))
    with caplog.at_level(logging.INFO, logger="llmkit.access"):
        response = await client.get("/health")
    assert response.status == 200
    assert not [r for r in caplog.records if r.name == "llmkit.access"]
