"""`llmkit orchestrate` as users run it: the server, then `submit --wait` and `status` from a shell."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_process import LLMKIT, ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path, "--port", "0", "--concurrency", "2", command="orchestrate") as process:
        process.wait_listening()
        yield process


def run(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [LLMKIT, "orchestrate", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_submit_wait_prints_the_result_and_status_reads_it(server: ServerProcess) -> None:
    prompt = "What is the capital of France?"
    done = run("submit", prompt, "--priority", "high", "--wait", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == prompt  # the echo backend answers the prompt
    request_id = run("submit", "later", "--url", server.url).stdout.strip()
    assert len(request_id) == 36
    shown = run("status", request_id, "--url", server.url, "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["request_id"] == request_id
    with urllib.request.urlopen(f"{server.url}/stats", timeout=10) as response:
        assert json.loads(response.read())["concurrency"] == 2, "--concurrency reached the worker pool"


def test_errors_exit_1_with_a_message(server: ServerProcess) -> None:
    unknown = run("status", "no-such-job", "--url", server.url)
    assert unknown.returncode == 1 and "no job" in unknown.stderr
    bad = run("submit", "x", "--priority", "urgent", "--url", server.url)
    assert bad.returncode == 1 and "critical, high, normal, low" in bad.stderr
    down = run("status", "x", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_help_has_examples() -> None:
    done = run("--help")
    assert done.returncode == 0 and "llmkit orchestrate submit" in done.stdout


def test_several_workers_are_refused_while_jobs_live_in_memory() -> None:
    done = run("--port", "0", "--workers", "2")
    assert done.returncode == 2 and "server.workers must be 1" in done.stderr
    done = run("--port", "0", "--role", "worker")
    assert done.returncode == 2 and "needs a queue.url shared" in done.stderr


def test_the_openai_backend_answers_through_the_simulator(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate") as simulate:
        sim_url = simulate.wait_listening()
        args = ("--port", "0", "--backend", "openai", "--backend-url", f"{sim_url}/v1")
        args += ("--model", "gpt-4o-mini")
        with ServerProcess(tmp_path, *args, command="orchestrate") as server:
            server.wait_listening()
            done = run("submit", "Hello!", "--wait", "--json", "--url", server.url)
    assert done.returncode == 0, done.stderr + done.stdout
    job = json.loads(done.stdout)
    assert job["status"] == "completed" and job["result"]
