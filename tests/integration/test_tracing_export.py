"""Tracing through the exporter process, and of streamed answers, into a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration.test_tracing import MODEL, gateway_spans, server_spans, traced_env
from tests.otlp_receiver import OtlpReceiver
from tests.serve_process import ROOT, ServerProcess

TRACED = """
import sys
from llmkit.core import telemetry
from llmkit.settings import load_settings

on = {"telemetry.enabled": True, "telemetry.otlp_endpoint": sys.argv[1]}
settings = load_settings("default", on, env={})
telemetry.configure(settings.telemetry, "exported", "9.9")
with telemetry.span("outer", {"n": 1, "names": ("a", "b")}):
    with telemetry.client_span("inner", {"bad": object(), "ok": 2.5}):
        pass
telemetry.shutdown()
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_spans_go_through_the_exporter_process_and_the_server_imports_no_opentelemetry() -> None:
    with OtlpReceiver() as receiver:
        done = subprocess.run(
            [sys.executable, "-c", TRACED, receiver.url], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        # Everything was handed over and exported by the time shutdown() returned.
        spans = {s.name: s for s in receiver.received()}
    assert done.stdout.strip().splitlines()[-1] == "[]"
    outer, inner = spans["outer"], spans["inner"]
    assert inner.parent_id == outer.span_id and inner.trace_id == outer.trace_id and outer.parent_id == ""
    assert (outer.kind, inner.kind) == ("INTERNAL", "CLIENT")
    assert outer.attributes == {"n": 1, "names": ["a", "b"]}
    # A value OTLP cannot carry is left out, as the SDK does; the others stay.
    assert inner.attributes == {"ok": 2.5}
    assert outer.resource["service.name"] == "exported" and outer.resource["service.version"] == "9.9"
    assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns


async def streamed(url: str, text: str) -> str:
    """The SSE body of a streamed /api/chat-optimized answer."""
    payload = {"messages": [{"role": "user", "content": text}], "stream": True, "use_cache": False}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/api/chat-optimized", json=payload) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.text()


async def test_a_streamed_request_joining_an_identical_call_has_a_coalescing_wait_span(
    tmp_path: Path,
) -> None:
    env = traced_env("")
    with OtlpReceiver() as receiver:
        env["OTLP_ENDPOINT"] = receiver.url
        sim = ServerProcess(tmp_path, "--port", "0", "--ttft-ms", "400", command="simulate", env=env)
        with sim:
            upstream = sim.wait_listening() + "/v1"
            args = ("--port", "0", "--kind", "openai", "--upstream", upstream, "--model", MODEL)
            with ServerProcess(tmp_path, *args, command="gateway", env=env) as gw:
                url = gw.wait_listening()
                first = asyncio.create_task(streamed(url, "same stream"))
                await asyncio.sleep(0.15)  # the first call is waiting for its first token upstream
                bodies = await asyncio.gather(first, streamed(url, "same stream"))
                spans = receiver.wait_for(lambda got: len(server_spans(got, "/api/chat-optimized")) == 2)

    assert all("data:" in body for body in bodies)
    servers = server_spans(spans, "/api/chat-optimized")
    joined = [s for s in servers if s.attributes.get("llmkit.coalesced") is True]
    assert len(joined) == 1
    caller = next(s for s in servers if s is not joined[0])
    mine = gateway_spans(spans, joined[0].trace_id)
    wait = mine["coalescing wait"]
    assert len(wait) == 1 and wait[0].parent_id == joined[0].span_id and wait[0].kind == "INTERNAL"
    assert "error.type" not in wait[0].attributes and wait[0].status != 2
    # It lasts while the joiner follows the call (joined ~0.15 s into a 0.4 s wait for the first token).
    assert wait[0].end_ns - wait[0].start_ns >= 150_000_000
    assert joined[0].start_ns <= wait[0].start_ns <= wait[0].end_ns <= joined[0].end_ns
    # The call is the first request's: its chat span is there, none in the joiner's trace.
    assert f"chat {MODEL}" not in mine
    theirs = gateway_spans(spans, caller.trace_id)
    assert theirs[f"chat {MODEL}"][0].parent_id == caller.span_id
    assert "coalescing wait" not in theirs
