"""Secrets in backend URLs and key settings never reach stdout, stderr or an answer, whatever happens."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app
from tests.serve_process import ServerProcess

SECRETS = [f"SeKr1t{n}x" for n in range(10)]
# Every kind of place a secret sits: a URL's userinfo, a query parameter, a key setting, a password.
COMMON = {
    "LLMKIT_SERVER_LOG_LEVEL": "debug",
    "LLMKIT_GATEWAY_API_KEY": SECRETS[0],
    "LLMKIT_ORCHESTRATE_API_KEY": SECRETS[1],
    "LLMKIT_CLICKHOUSE_PASSWORD": SECRETS[2],
}
# (command, environment, a request to send when it starts, and its body)
CASES = {
    # Refused at start: the URL is quoted in the configuration error.
    "simulate-bad-url": ("simulate", {"LLMKIT_CACHE_URL": f"redis://127.0.0.1:1/0?password={SECRETS[3]}"}),
    "gateway-bad-url": ("gateway", {"LLMKIT_CACHE_URL": f"redis://h:1/0?prefix=x&token={SECRETS[3]}"}),
    "orchestrate-no-redis": ("orchestrate", {"LLMKIT_QUEUE_URL": f"redis://:{SECRETS[3]}@127.0.0.1:1/0"}),
    "aggregate-bad-url": (
        "aggregate",
        {"LLMKIT_AGGREGATE_STORE": f"clickhouse://default:{SECRETS[3]}@127.0.0.1:1/db?password={SECRETS[4]}"},
    ),
    "aggregate-no-clickhouse": (
        "aggregate",
        {"LLMKIT_AGGREGATE_STORE": f"clickhouse://default:{SECRETS[3]}@127.0.0.1:1/db"},
    ),
    # Starts, and its requests meet a backend that cannot be reached.
    "simulate-no-redis": ("simulate", {"LLMKIT_CACHE_URL": f"redis://u:{SECRETS[3]}@127.0.0.1:1/0"}),
    "gateway-no-upstream": (
        "gateway",
        {
            "LLMKIT_CACHE_URL": f"tiered+redis://u:{SECRETS[3]}@127.0.0.1:1/0",
            "LLMKIT_GATEWAY_UPSTREAMS": f"http://u:{SECRETS[4]}@127.0.0.1:1?key={SECRETS[5]}",
            "LLMKIT_GATEWAY_RETRIES": "0",
        },
    ),
    "orchestrate-no-backend": (
        "orchestrate",
        {
            "LLMKIT_ORCHESTRATE_BACKEND": "openai",
            "LLMKIT_ORCHESTRATE_BACKEND_URL": f"http://u:{SECRETS[4]}@127.0.0.1:1/v1?api_key={SECRETS[5]}",
            "LLMKIT_ORCHESTRATE_RETRIES": "0",
        },
    ),
}
REQUESTS = {
    "simulate": ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    "gateway": ("/api/chat-optimized", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
    "orchestrate": ("/api/v1/infer", {"prompt": "hi"}),
    "aggregate": ("/publish", {"topic": "t", "event_id": "e1", "source": "s", "payload": {}}),
}


def _post(url: str, body: object) -> str:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def _exercise(server: ServerProcess, command: str) -> list[str]:
    """The answers of a request that touches the backends, /stats and /health?deep=1."""
    path, body = REQUESTS[command]
    answers = [
        _post(server.url + path, body),
        _get(server.url + "/stats"),
        _get(server.url + "/health?deep=1"),
    ]
    if command == "orchestrate":
        job = json.loads(answers[0])
        job_id = job.get("request_id") or job.get("id")
        if job_id:
            answers.append(_get(f"{server.url}/api/v1/result/{job_id}?timeout=20"))
    return answers


@pytest.mark.parametrize("case", list(CASES))
def test_no_server_prints_or_answers_a_secret(tmp_path: Path, case: str) -> None:
    command, env = CASES[case]
    answers: list[str] = []
    with ServerProcess(tmp_path, "--port", "0", command=command, env={**COMMON, **env}) as server:
        line = server.read_line(60)
        match = server.listening.match(line or "")
        if match is not None:
            server.url = match.group(1)
            answers = _exercise(server, command)
            time.sleep(0.2)
            server.signal(signal.SIGTERM)
        server.wait(60)
        output = "\n".join(server.rest_of_stdout()) + "\n" + server.stderr
    seen = output + "\n".join(answers)
    assert output.strip(), "the server said nothing at all"
    leaked = [secret for secret in SECRETS if secret in seen]
    assert not leaked, f"{leaked} in:\n{seen}"


runner = CliRunner()
SHOW_ENV = {
    "LLMKIT_CACHE_URL": f"redis://user:{SECRETS[0]}@h:6379/0?prefix=p",
    "LLMKIT_QUEUE_URL": f"redis://h:6379/0?password={SECRETS[1]}&prefix=q",
    "LLMKIT_ORCHESTRATE_BACKEND_URL": f"https://api.example/v1?api_key={SECRETS[2]}",
    "LLMKIT_GATEWAY_UPSTREAMS": f"http://:{SECRETS[3]}@gpu1:11434*2,http://gpu2:11434?token={SECRETS[4]}",
    "LLMKIT_ORCHESTRATE_API_KEY": SECRETS[5],
    "LLMKIT_GATEWAY_API_KEY": SECRETS[6],
    "LLMKIT_CLICKHOUSE_PASSWORD": SECRETS[7],
    "LLMKIT_CLICKHOUSE_URL": f"clickhouse://default:{SECRETS[8]}@h:9000/db",
    "LLMKIT_AGGREGATE_STORE": f"clickhouse://h:9000/db?password={SECRETS[9]}",
    "COLUMNS": "300",
}


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show_masks_every_secret(as_json: bool) -> None:
    result = runner.invoke(app, ["config", "show", *(["--json"] if as_json else [])], env=SHOW_ENV)
    assert result.exit_code == 0, result.output
    leaked = [secret for secret in SECRETS if secret in result.output]
    assert not leaked, result.output
    if as_json:
        settings = json.loads(result.stdout)["settings"]
        assert settings["cache.url"]["value"] == "redis://user:****@h:6379/0?prefix=p"
        assert settings["queue.url"]["value"] == "redis://h:6379/0?password=****&prefix=q"
        assert settings["gateway.api_key"]["value"] == "********"
        assert (
            settings["gateway.upstreams"]["value"] == "http://:****@gpu1:11434*2,http://gpu2:11434?token=****"
        )
        assert settings["orchestrate.backend_url"]["value"] == "https://api.example/v1?api_key=****"
        assert settings["server.workers"]["value"] == 1


def test_config_show_lists_the_connection_timeouts_and_reads_them_from_the_environment() -> None:
    env = {"LLMKIT_SERVER_HEADER_TIMEOUT_S": "2.5", "LLMKIT_SERVER_KEEPALIVE_TIMEOUT_S": "30"}
    result = runner.invoke(app, ["config", "show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["server.header_timeout_s"] == {
        "value": 2.5,
        "origin": "env LLMKIT_SERVER_HEADER_TIMEOUT_S",
    }
    assert settings["server.keepalive_timeout_s"] == {
        "value": 30.0,
        "origin": "env LLMKIT_SERVER_KEEPALIVE_TIMEOUT_S",
    }
    result = runner.invoke(app, ["config", "show"], env={"COLUMNS": "200"})
    assert "server.header_timeout_s" in result.stdout and "server.keepalive_timeout_s" in result.stdout
    result = runner.invoke(app, ["config", "show"], env={"LLMKIT_SERVER_HEADER_TIMEOUT_S": "0"})
    assert result.exit_code == 2
    assert "server.header_timeout_s must be >= 0.001" in result.stderr


# The platform's own secrets (admin keys, peppers, an embeddings key), set on running servers; every
# read-only route an operator or a scraper calls, with and without the admin key, must answer without them.
ADMIN_KEY = "SeKr1tAdmin0123456789x"
PLATFORM_SECRETS = {
    "gateway": {
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "LLMKIT_GATEWAY_KEY_PEPPER": "SeKr1tPepper0x",
        "LLMKIT_GATEWAY_EMBEDDINGS_API_KEY": "SeKr1tEmbed0x",
        "LLMKIT_GATEWAY_API_KEY": "SeKr1tUpstream0x",
    },
    "simulate": {"LLMKIT_SIMULATE_ADMIN_KEY": ADMIN_KEY},
    "orchestrate": {
        "LLMKIT_ORCHESTRATE_ADMIN_KEY": ADMIN_KEY,
        "LLMKIT_ORCHESTRATE_KEY_PEPPER": "SeKr1tPepper1x",
        "LLMKIT_ORCHESTRATE_API_KEY": "SeKr1tUpstream1x",
    },
}
READS = ("/stats", "/api/stats", "/api/admin/stats", "/api/admin/health", "/health?deep=1", "/metrics")


def _get_as(url: str, key: str | None) -> str:
    headers = {"X-API-Key": key} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


@pytest.mark.parametrize("command", list(PLATFORM_SECRETS))
def test_stats_and_health_never_answer_the_platforms_secrets(tmp_path: Path, command: str) -> None:
    env = {"LLMKIT_SERVER_LOG_LEVEL": "debug", **PLATFORM_SECRETS[command]}
    if command == "orchestrate":
        env["LLMKIT_ORCHESTRATE_PLATFORM_URL"] = f"sqlite:///{tmp_path}/platform.db"
    with ServerProcess(tmp_path, "--port", "0", command=command, env=env) as server:
        server.wait_listening()
        answers = {f"{path} {who}": _get_as(server.url + path, key) for path in READS for who, key in (
            ("anonymous", None), ("admin", ADMIN_KEY))}  # fmt: skip
        server.signal(signal.SIGTERM)
        server.wait(60)
        output = "\n".join(server.rest_of_stdout()) + "\n" + server.stderr
    secrets = list(PLATFORM_SECRETS[command].values())
    if command == "gateway":  # the admin's /stats shows the gateway's settings: the check has teeth
        assert '"admin_key":"********"' in answers["/stats admin"].replace(" ", "")
    for where, text in [*answers.items(), ("output", output)]:
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"{leaked} in {where}:\n{text[:2000]}"
