"""`llmkit orchestrate` as users run it: the server, then `submit --wait` and `status` from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkit.cli.orchestrate import backend_lines
from llmkit.cli.stats import profile_urls
from llmkit.settings import Settings, load_settings
from tests.serve_process import LLMKIT, ServerProcess
from tests.servers import RedisServer


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


def wait_for_stderr(process: ServerProcess, text: str, timeout: float = 30.0) -> str:
    """The server's stderr once it contains `text` (the banner follows the listening line)."""
    deadline = time.monotonic() + timeout
    while text not in process.stderr:
        assert time.monotonic() < deadline, f"{text!r} never reached stderr: {process.stderr}"
        time.sleep(0.05)
    return process.stderr


def test_a_worker_with_no_backend_says_it_runs_echo_and_how_to_pick_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    args = ("--port", "0", "--role", "worker", "--queue-url", redis_server.url)
    with ServerProcess(tmp_path, *args, command="orchestrate") as worker:
        worker.wait_listening()
        stderr = wait_for_stderr(worker, "warning:")
    assert "backend: echo (answers each prompt with itself" in stderr
    assert "no backend given" in stderr and "--backend openai --backend-url" in stderr


def test_a_chosen_backend_is_named_with_its_url_and_model_and_no_warning(tmp_path: Path) -> None:
    args = ("--port", "0", "--backend", "openai", "--backend-url", "http://127.0.0.1:9/v1", "--model", "m1")
    with ServerProcess(tmp_path, *args, command="orchestrate") as server:
        server.wait_listening()
        stderr = wait_for_stderr(server, "queue:")
    assert "backend: openai at http://127.0.0.1:9/v1, model m1" in stderr
    assert "warning:" not in stderr


def test_echo_chosen_on_purpose_gets_no_warning() -> None:
    settings = load_settings(None, {"orchestrate.backend": ("echo", "flag --backend")}, env={})
    lines = backend_lines(settings)
    assert any("backend: echo" in line for line in lines)
    assert not any("warning" in line for line in lines)


def test_orchestrate_defaults_to_port_8090_beside_the_gateway_on_8080() -> None:
    settings = load_settings(None, env={})
    assert (settings.orchestrate.port, settings.gateway.port) == (8090, 8080)
    ports = {
        settings.simulate.port,
        settings.aggregate.port,
        settings.gateway.port,
        settings.orchestrate.port,
    }
    assert len(ports) == 4, "every server has its own default port"
    assert "http://127.0.0.1:8090" in profile_urls(settings)
    assert "http://127.0.0.1:8080" in profile_urls(settings)
    assert "http://127.0.0.1:8090" in run("submit", "--help").stdout
    # submit's default URL is the orchestrator's default port: nothing listens there in tests.
    env = {k: v for k, v in os.environ.items() if k != "LLMKIT_ORCHESTRATE_URL"}
    down = subprocess.run(
        [LLMKIT, "orchestrate", "status", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert "127.0.0.1:8090" in down.stderr


def test_stats_without_urls_lists_each_servers_default_port() -> None:
    done = subprocess.run(
        [LLMKIT, "stats", "--once", "--json", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("LLMKIT_")},
        check=False,
    )
    urls = [row["url"] for row in json.loads(done.stdout)]
    expected = ["4545", "8000", "8080", "8090"]
    assert sorted(url.rsplit(":", 1)[1] for url in urls) == expected, urls


@pytest.mark.parametrize("by", ["session", "client", "both"])
def test_rate_limit_by_flag_sets_the_setting(served_settings: list[Settings], by: str) -> None:
    from typer.testing import CliRunner

    from llmkit.cli.main import app

    result = CliRunner().invoke(app, ["orchestrate", "--rate-limit-by", by])
    assert result.exit_code == 0, result.output
    assert served_settings[0].orchestrate.rate_limit_by == by
    bad = CliRunner().invoke(app, ["orchestrate", "--rate-limit-by", "ip"])
    assert bad.exit_code == 2


def test_listening_beyond_loopback_needs_the_admin_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LLMKIT_ORCHESTRATE_ADMIN_KEY"}
    argv = [LLMKIT, "orchestrate", "--host", "0.0.0.0", "--port", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert "orchestrate.admin_key" in done.stderr and "LLMKIT_ORCHESTRATE_ADMIN_KEY" in done.stderr
    assert done.stdout == ""
    secret = "orchestrate-admin-key-e2e-0123456789"
    keyed = {**env, "LLMKIT_ORCHESTRATE_ADMIN_KEY": secret}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=keyed
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("llmkit orchestrate listening on http://0.0.0.0:"), line
            port = line.rsplit(":", 1)[1]
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/status/{'0' * 36}",
                headers={"Authorization": f"Bearer {secret}"},
            )
            with pytest.raises(urllib.error.HTTPError) as unknown:
                urllib.request.urlopen(request, timeout=10)
            unknown.value.close()
            assert unknown.value.code == 404  # the admin key is accepted; the job does not exist
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_submit_sends_the_key_in_llmkit_api_key(tmp_path: Path) -> None:
    secret = "orchestrate-admin-key-for-the-client-0123"
    env = {"LLMKIT_ORCHESTRATE_ADMIN_KEY": secret, "LLMKIT_ORCHESTRATE_REQUIRE_API_KEY": "true"}
    with ServerProcess(tmp_path, "--port", "0", command="orchestrate", env=env) as process:
        url = process.wait_listening()
        argv = [LLMKIT, "orchestrate", "submit", "hello there", "--url", url, "--wait"]
        clean = {k: v for k, v in os.environ.items() if k != "LLMKIT_API_KEY"}
        refused = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean)
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env={**clean, "LLMKIT_API_KEY": secret}
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() and secret not in done.stdout + done.stderr
