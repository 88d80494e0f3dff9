"""Tracing of the orchestrator's jobs, `llmkit publish` batches and the aggregator's commits, into a real
OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import aiohttp

from tests.integration.test_tracing import receiver, traced_env  # noqa: F401  (the receiver fixture)
from tests.otlp_receiver import OtlpReceiver
from tests.serve_process import LLMKIT, ServerProcess


async def test_a_job_span_links_to_its_submit_and_parents_the_upstream_call(
    tmp_path: Path,
    receiver: OtlpReceiver,  # noqa: F811
) -> None:
    env = traced_env(receiver.url)
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=env) as sim:
        backend = sim.wait_listening() + "/v1"
        args = ("--port", "0", "--backend", "openai", "--backend-url", backend, "--model", "m")
        with ServerProcess(tmp_path, *args, command="orchestrate", env=env) as orch:
            url = orch.wait_listening()
            async with aiohttp.ClientSession() as session:
                body = {"prompt": "What is Rust?", "session_id": "s1"}
                async with session.post(url + "/api/v1/infer", json=body) as made:
                    assert made.status in (200, 202), await made.text()
                    job_id = (await made.json())["request_id"]
                for _ in range(200):
                    async with session.get(f"{url}/api/v1/status/{job_id}") as got:
                        if (await got.json())["status"] == "completed":
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the job did not complete")
            spans = receiver.wait_for(
                lambda got: (
                    any(s.name == "orchestrate job" for s in got)
                    and any(s.service == "llmkit-simulate" and s.kind == "SERVER" for s in got)
                )
            )

    submit = next(s for s in spans if s.service == "llmkit-orchestrate" and s.name == "POST /api/v1/infer")
    job = next(s for s in spans if s.name == "orchestrate job")
    # Its own trace, linked to the submit's span.
    assert job.trace_id != submit.trace_id and job.parent_id == ""
    assert job.links == [(submit.trace_id, submit.span_id)]
    assert job.attributes["llmkit.job.id"] == job_id
    upstream = next(s for s in spans if s.service == "llmkit-simulate" and s.kind == "SERVER")
    assert upstream.trace_id == job.trace_id


async def test_publish_batches_are_client_spans_parenting_the_aggregators_server_spans(
    tmp_path: Path,
    receiver: OtlpReceiver,  # noqa: F811
) -> None:
    env = traced_env(receiver.url)
    args = ("--port", "0", "--store", f"sqlite:///{tmp_path}/agg.db")
    with ServerProcess(tmp_path, *args, command="aggregate", env=env) as agg:
        url = agg.wait_listening()
        publish = [LLMKIT, "publish", "--url", url, "--count", "30", "--batch-size", "10", "--quiet"]
        done = subprocess.run(
            publish, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.wait_for(
            lambda got: (
                sum(s.name == "POST /publish" for s in got) == 3
                and sum(s.name == "publish batch" for s in got) == 3
                and sum(s.attributes["llmkit.batch.events"] for s in got if s.name == "aggregate commit")
                == 30
            )
        )

    batches = {s.span_id: s for s in spans if s.name == "publish batch"}
    assert {s.service for s in batches.values()} == {"llmkit-publish"}
    assert all(s.kind == "CLIENT" and s.attributes["llmkit.batch.events"] == 10 for s in batches.values())
    served = [s for s in spans if s.name == "POST /publish"]
    assert {s.service for s in served} == {"llmkit-aggregate"}
    assert {s.parent_id for s in served} == set(batches)
    # Each commit links to the publishes it stored (one commit may serve several).
    commits = [s for s in spans if s.name == "aggregate commit"]
    assert {span_id for s in commits for _, span_id in s.links} == {s.span_id for s in served}
    assert all(s.parent_id == "" and s.service == "llmkit-aggregate" for s in commits)
