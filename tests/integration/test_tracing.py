"""Tracing through real `llmkit gateway` and `llmkit simulate` processes into a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.serve_process import ROOT, ServerProcess
from tests.servers import free_port

QUESTION = "What is Rust?"
MODEL = "deepseek-r1:8b"
SECRET_KEY = "sk-llmkit-test-secret-0123456789"


def traced_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "TELEMETRY_ENABLED": "true",
        "OTLP_ENDPOINT": endpoint,
        "ENVIRONMENT": "test",
        "LLMKIT_SERVER_ACCESS_LOG": "false",
        **extra,
    }


class Pair:
    """A traced simulator and a traced gateway in front of it."""

    def __init__(self, tmp: Path, env: dict[str, str], kind: str = "openai") -> None:
        self.sim = ServerProcess(tmp, "--port", "0", command="simulate", env=env)
        self.env, self.kind, self.tmp = env, kind, tmp
        self.gateway: ServerProcess | None = None

    def __enter__(self) -> Pair:
        sim_url = self.sim.start().wait_listening()
        upstream = sim_url + ("/v1" if self.kind == "openai" else "")
        args = ("--port", "0", "--kind", self.kind, "--upstream", upstream, "--model", MODEL)
        self.gateway = ServerProcess(self.tmp, *args, command="gateway", env=self.env).start()
        self.url = self.gateway.wait_listening()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.gateway is not None:
            self.gateway.close()
        self.sim.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as made:
        yield made


async def ask(url: str, text: str = QUESTION, headers: dict[str, str] | None = None, **body: Any) -> Any:
    payload = {"messages": [{"role": "user", "content": text}], "stream": False, **body}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/api/chat-optimized", json=payload, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, [(s.service, s.name) for s in spans]
    return found[0]


def has_trace(spans: list[ReceivedSpan]) -> bool:
    services = {(s.service, s.kind) for s in spans}
    return ("llmkit-simulate", "SERVER") in services and ("llmkit-gateway", "SERVER") in services


@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_one_trace_runs_through_the_gateway_into_the_simulator(
    tmp_path: Path, receiver: OtlpReceiver, kind: str
) -> None:
    with Pair(tmp_path, traced_env(receiver.url), kind) as pair:
        answer = await ask(pair.url, headers={"Authorization": f"Bearer {SECRET_KEY}"})
        spans = receiver.wait_for(has_trace)

    server = one(spans, "llmkit-gateway", "POST /api/chat-optimized")
    chat = one(spans, "llmkit-gateway", f"chat {MODEL}")
    sim_path = "/v1/chat/completions" if kind == "openai" else "/api/chat"
    upstream = one(spans, "llmkit-simulate", f"POST {sim_path}")
    # One trace: the gateway's server span, its chat CLIENT span, and the simulator's SERVER span under it.
    assert server.kind == "SERVER" and server.parent_id == ""
    assert chat.kind == "CLIENT" and chat.parent_id == server.span_id
    assert upstream.kind == "SERVER" and upstream.parent_id == chat.span_id
    assert {server.trace_id, chat.trace_id, upstream.trace_id} == {server.trace_id}
    assert server.attributes["http.route"] == "/api/chat-optimized"
    assert server.attributes["http.response.status_code"] == 200
    assert upstream.attributes["http.response.status_code"] == 200

    attrs = chat.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == kind
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == answer.get("model", MODEL)
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["server.address"] == "127.0.0.1"
    assert "error.type" not in attrs
    # Stages of the request are children of its server span.
    stages = {s.name: s for s in spans if s.trace_id == server.trace_id and s.service == "llmkit-gateway"}
    assert stages["auth"].parent_id == server.span_id
    # No message content and no credential anywhere unless capture_content is on.
    text = repr([s.attributes for s in spans])
    assert QUESTION not in text and SECRET_KEY not in text
    assert "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text


def gateway_spans(spans: list[ReceivedSpan], trace_id: str) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        if s.trace_id == trace_id and s.service == "llmkit-gateway":
            found.setdefault(s.name, []).append(s)
    return found


def server_spans(spans: list[ReceivedSpan], path: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.service == "llmkit-gateway" and s.name == f"POST {path}"]


async def test_cache_coalescing_and_queue_stages_are_child_spans(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = traced_env(receiver.url)
    sim = ServerProcess(tmp_path, "--port", "0", "--ttft-ms", "300", command="simulate", env=env)
    with sim:
        upstream = sim.wait_listening() + "/v1"
        args = ("--port", "0", "--kind", "openai", "--upstream", upstream, "--max-concurrent", "1")
        with ServerProcess(tmp_path, *args, command="gateway", env=env) as gw:
            url = gw.wait_listening()
            # Three identical questions share one call; a fourth waits for the one upstream slot.
            await asyncio.gather(*(ask(url, "same") for _ in range(3)), ask(url, "other"))
            await ask(url, "same")  # from the cache now
            spans = receiver.wait_for(lambda got: len(server_spans(got, "/api/chat-optimized")) == 5)

    servers = server_spans(spans, "/api/chat-optimized")
    hits = [s for s in servers if s.attributes.get("llmkit.cache.hit")]
    coalesced = [s for s in servers if s.attributes.get("llmkit.coalesced")]
    assert len(hits) == 1 and len(coalesced) == 2
    hit = gateway_spans(spans, hits[0].trace_id)
    assert hit["cache lookup"][0].parent_id == hits[0].span_id
    assert hit["cache lookup"][0].attributes["llmkit.cache.hit"] is True
    assert "chat " + MODEL not in hit
    for follower in coalesced:
        mine = gateway_spans(spans, follower.trace_id)
        assert mine["coalescing wait"][0].parent_id == follower.span_id
        # The call belongs to the request that started it, not to those that joined it.
        assert f"chat {MODEL}" not in mine
    callers = [s for s in servers if s not in hits and s not in coalesced]
    assert len(callers) == 2
    waits = [gateway_spans(spans, s.trace_id).get("queue wait", []) for s in callers]
    # One of the two calls found the slot taken and waited for it.
    assert sorted(len(w) for w in waits) == [0, 1]
    for caller in callers:
        mine = gateway_spans(spans, caller.trace_id)
        assert mine[f"chat {MODEL}"][0].parent_id == caller.span_id
        assert mine["cache lookup"][0].attributes["llmkit.cache.hit"] is False


ADMIN = "bootstrap-admin-key-for-tests-0123456789"


async def test_quota_search_and_retrieval_are_child_spans(tmp_path: Path, receiver: OtlpReceiver) -> None:
    env = traced_env(receiver.url, LLMKIT_GATEWAY_ADMIN_KEY=ADMIN, LLMKIT_GATEWAY_ANALYTICS_ENABLED="false")
    with Pair(tmp_path, env) as pair:
        async with aiohttp.ClientSession() as session:
            admin = {"X-API-Key": ADMIN}
            body = {"name": "acme", "quotas": {"rpm": 1000}}
            async with session.post(pair.url + "/api/admin/tenants", json=body, headers=admin) as made:
                assert made.status == 201, await made.text()
                tenant = (await made.json())["id"]
            body = {"name": "k", "tenant_id": tenant, "scopes": ["chat", "search"]}
            async with session.post(pair.url + "/api/admin/api-keys", json=body, headers=admin) as made:
                assert made.status == 201, await made.text()
                key = {"Authorization": f"Bearer {(await made.json())['key']}"}
            doc = {"id": "cats", "title": "Cats", "content": "Cats chase mice because they are hunters."}
            async with session.post(pair.url + "/api/documents", json=doc, headers=key) as made:
                assert made.status == 202, await made.text()
            for _ in range(400):
                async with session.get(pair.url + "/api/documents/cats", headers=key) as got:
                    if (await got.json())["index"]["state"] == "completed":
                        break
                await asyncio.sleep(0.025)
            async with session.post(pair.url + "/api/search", json={"query": "cats"}, headers=key) as got:
                assert got.status == 200, await got.text()
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "Why do cats chase mice?"}]}
            chat["rag"] = {"type": "keyword", "top_k": 1}
            async with session.post(pair.url + "/v1/chat/completions", json=chat, headers=key) as got:
                assert got.status == 200, await got.text()
            spans = receiver.wait_for(lambda got: any(s.name == "retrieval" for s in got) and has_trace(got))

    search_route = server_spans(spans, "/api/search")[0]
    searched = gateway_spans(spans, search_route.trace_id)
    assert searched["search"][0].parent_id == search_route.span_id
    assert searched["search"][0].attributes["llmkit.search.hits"] == 1
    chat_route = server_spans(spans, "/v1/chat/completions")[0]
    mine = gateway_spans(spans, chat_route.trace_id)
    assert mine["quota"][0].parent_id == chat_route.span_id
    retrieval = mine["retrieval"][0]
    assert retrieval.parent_id == chat_route.span_id
    assert retrieval.attributes["llmkit.retrieval.chunks"] == 1
    assert mine["search"][0].parent_id == retrieval.span_id
    assert mine[f"chat {MODEL}"][0].parent_id == chat_route.span_id


async def test_capture_content_puts_the_messages_in_the_chat_span(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = traced_env(receiver.url, LLMKIT_TELEMETRY_CAPTURE_CONTENT="true")
    with Pair(tmp_path, env) as pair:
        answer = await ask(pair.url)
        spans = receiver.wait_for(has_trace)
    chat = one(spans, "llmkit-gateway", f"chat {MODEL}")
    assert QUESTION in chat.attributes["gen_ai.input.messages"]
    assert answer["message"]["content"][:40] in chat.attributes["gen_ai.output.messages"]


async def test_service_name_goes_on_the_resource(tmp_path: Path, receiver: OtlpReceiver) -> None:
    # OTLP_ENDPOINT given with the /v1/traces path works as well as the base URL.
    env = traced_env(receiver.url + "/v1/traces", SERVICE_NAME="rustassistant")
    with Pair(tmp_path, env) as pair:
        await ask(pair.url)
        spans = receiver.wait_for(lambda got: any(s.kind == "CLIENT" for s in got))
    assert {s.service for s in spans} == {"rustassistant"}
    assert {s.resource["deployment.environment.name"] for s in spans} == {"test"}


async def test_sampling_zero_exports_nothing_but_a_sampled_caller_is_still_traced(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    with Pair(tmp_path, traced_env(receiver.url, SAMPLING_RATE="0")) as pair:
        for n in range(20):
            await ask(pair.url, f"question {n}")
        # Parent-based: a caller that sampled its trace gets it continued through both servers.
        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        await ask(pair.url, "sampled", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        spans = receiver.wait_for(has_trace)
    # Stopped: whatever the servers held has been exported by now.
    spans = receiver.received()
    assert {s.trace_id for s in spans} == {trace_id}
    assert one(spans, "llmkit-gateway", "POST /api/chat-optimized").parent_id == parent


async def test_a_dead_collector_never_fails_requests(tmp_path: Path) -> None:
    env = traced_env(f"http://127.0.0.1:{free_port()}")
    with Pair(tmp_path, env) as pair:
        answers = await asyncio.gather(*(ask(pair.url, f"dead {n}") for n in range(100)))
        assert pair.gateway is not None
        assert len(answers) == 100 and all(a["message"]["content"] for a in answers)
        # Still serving once the exporter has failed a few times.
        await asyncio.sleep(1.5)
        assert (await ask(pair.url, "after"))["message"]["content"]
        # The failed exports are said once, not twice per batch.
        assert pair.gateway.stderr.count("tracing: ") == 1, pair.gateway.stderr


async def test_a_hanging_collector_never_holds_requests(tmp_path: Path) -> None:
    with OtlpReceiver(hang=True) as hanging, Pair(tmp_path, traced_env(hanging.url)) as pair:
        await ask(pair.url, "first")
        # The exporter is now waiting on a collector that never answers.
        hanging.wait_for(lambda _: hanging.requests > 0)
        answers = await asyncio.gather(*(ask(pair.url, f"hang {n}") for n in range(100)))
        assert all(a["message"]["content"] for a in answers)


def test_tracing_off_imports_no_tracing_sdk(tmp_path: Path) -> None:
    # A process of its own: this test session has imported OpenTelemetry (the receiver).
    script = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from llmkit.settings import load_settings
from llmkit.simulate.app import create_app as simulate_app
from llmkit.gateway.app import create_app as gateway_app

async def main():
    settings = load_settings("default", env={})
    assert not settings.telemetry.enabled
    async with TestClient(TestServer(simulate_app(settings))) as sim:
        url = str(sim.make_url("/v1"))
        gw_settings = load_settings("default", {"gateway.upstreams": url, "gateway.upstream_kind": "openai",
            "gateway.platform_url": sys.argv[1]}, env={})
        async with TestClient(TestServer(gateway_app(gw_settings))) as gw:
            for n in range(3):
                body = {"messages": [{"role": "user", "content": f"q{n}"}]}
                response = await gw.post("/api/chat-optimized", json=body)
                assert response.status == 200, await response.text()
    from llmkit.core import telemetry
    assert telemetry.tracer is None
    # redis-py 8 imports opentelemetry.sdk.metrics by itself when it is installed; tracing is ours.
    tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.trace.propagation.")
    print(sorted(name for name in sys.modules if name.startswith(tracing)))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path}/platform.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


async def test_each_worker_of_a_pre_forked_gateway_exports_its_spans(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = traced_env(receiver.url)
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=env) as sim:
        upstream = sim.wait_listening() + "/v1"
        args = ("--port", "0", "--workers", "2", "--kind", "openai", "--upstream", upstream)
        with ServerProcess(tmp_path, *args, command="gateway", env=env) as gw:
            url = gw.wait_listening()
            await asyncio.gather(*(ask(url, f"worker {n}") for n in range(40)))
            spans = receiver.wait_for(
                lambda got: (
                    sum(s.name == f"chat {MODEL}" and s.service == "llmkit-gateway" for s in got) == 40
                )
            )
    chats = [s for s in spans if s.name == f"chat {MODEL}"]
    assert len({s.trace_id for s in chats}) == 40
    # Both workers traced (each started its exporter after the fork) and said which one it is.
    assert len({s.resource["process.pid"] for s in chats}) == 2


async def test_each_failed_upstream_attempt_is_a_chat_span_with_its_error_type(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = traced_env(receiver.url, LLMKIT_GATEWAY_RETRIES="2", LLMKIT_GATEWAY_BACKOFF_BASE_S="0.01")
    with ServerProcess(tmp_path, "--port", "0", "--fault-503", "1", command="simulate", env=env) as sim:
        upstream = sim.wait_listening() + "/v1"
        args = ("--port", "0", "--kind", "openai", "--upstream", upstream, "--model", MODEL)
        with ServerProcess(tmp_path, *args, command="gateway", env=env) as gw:
            url = gw.wait_listening()
            payload = {"messages": [{"role": "user", "content": "fail"}], "stream": False}
            async with (
                aiohttp.ClientSession() as session,
                session.post(url + "/api/chat-optimized", json=payload) as response,
            ):
                assert response.status >= 500
                status = response.status
            spans = receiver.wait_for(
                lambda got: (
                    sum(s.name == f"chat {MODEL}" for s in got) == 3
                    and any(s.name == "POST /api/chat-optimized" for s in got)
                )
            )
    server = one(spans, "llmkit-gateway", "POST /api/chat-optimized")
    assert server.attributes["http.response.status_code"] == status
    assert server.attributes["error.type"] == str(status) and server.status == 2  # STATUS_CODE_ERROR
    attempts = [s for s in spans if s.name == f"chat {MODEL}"]
    # One span per attempt (the first and gateway.retries=2 more), each under the request's span.
    assert all(s.parent_id == server.span_id and s.kind == "CLIENT" for s in attempts)
    assert [s.attributes["error.type"] for s in attempts] == ["503"] * 3
    assert all(s.status == 2 and "gen_ai.response.model" not in s.attributes for s in attempts)
