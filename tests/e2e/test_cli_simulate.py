"""`llmkit simulate` as a user runs it: a real process, the openai client, real Redis and ClickHouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import openai
import redis

from llmkit.settings import Settings
from tests.serve_process import LLMKIT, ROOT, ServerProcess
from tests.servers import ClickHouseServer, RedisServer, free_port

SAMPLE = ROOT / "llmkit" / "simulate" / "sample_qa.jsonl"


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=30)


def test_simulate_serves_the_shipped_answers(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate") as server:
        url = server.wait_listening()
        client = client_for(url)
        try:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Bagaimana resep nasi goreng kampung?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            whole = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "resep nasi goreng kampung"}]
            )
        finally:
            client.close()
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Nasi Goreng" in text
        assert text == whole.choices[0].message.content
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert {c.model for c in chunks} == {"gpt-4o-mini"}
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        listening = [line for line in server.rest_of_stdout() if "listening on" in line]
        assert listening == [f"llmkit simulate listening on {url}"]
        assert f"source: markdown files in {ROOT / 'zresponse'}\n" in server.stderr
        assert "qa:     questions from the set shipped with llmkit first (threshold 0.35" in server.stderr
        assert f"curl -N {url}/v1/chat/completions" in server.stderr


def test_simulate_outside_the_checkout_serves_the_shipped_answers(tmp_path: Path) -> None:
    # A `pip install` user runs it anywhere: there is no ./zresponse in their folder.
    with ServerProcess(tmp_path, "--port", "0", command="simulate", cwd=tmp_path) as server:
        url = server.wait_listening()
        client = client_for(url)
        try:
            whole = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "resep nasi goreng kampung"}]
            )
            short = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}]
            )
        finally:
            client.close()
        assert "Nasi Goreng" in (whole.choices[0].message.content or "")
        assert short.choices[0].message.content == "The capital of France is Paris."
        assert "(the answers shipped with llmkit; ./zresponse does not exist here)" in server.stderr


def test_simulate_with_a_missing_responses_dir_given_fails_clearly(tmp_path: Path) -> None:
    # Only the default falls back: a folder the user names must exist.
    missing = tmp_path / "answers"
    with ServerProcess(
        tmp_path, "--port", "0", "--responses-dir", str(missing), command="simulate", cwd=tmp_path
    ) as server:
        assert server.wait() == 1
    assert f"responses directory {missing} does not exist" in server.stderr


def test_simulate_with_a_bad_qa_path_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "questions.jsonl"
    with ServerProcess(tmp_path, "--port", "0", "--qa-path", str(missing), command="simulate") as server:
        assert server.wait() == 2
    assert f"configuration error: simulate.qa_path: {missing} does not exist" in server.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pertanyaan": "Q?", "jawaban": 3}\n', encoding="utf-8")
    with ServerProcess(
        tmp_path, "--port", "0", command="simulate", env={"LLMKIT_SIMULATE_QA_PATH": str(bad)}
    ) as server:
        assert server.wait() == 2
    assert f"configuration error: {bad}:1: jawaban must be a string; got int 3" in server.stderr


def test_the_wheel_ships_the_default_answers_and_profiles(tmp_path: Path) -> None:
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("llmkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    answers = {p.name for p in (ROOT / "zresponse").glob("*.md")}
    assert answers and {f"llmkit/_zresponse/{name}" for name in answers} <= names
    assert "llmkit/_profiles/default.yml" in names
    assert {"llmkit/simulate/data/qa/en.jsonl", "llmkit/simulate/data/qa/id.jsonl"} <= names
    # From the unpacked wheel, far from any checkout, the default resolves to the shipped answers.
    code = (
        "from llmkit.simulate.sources.file import resolve_responses_dir\n"
        "from llmkit.simulate.sources.qa import SHIPPED_QA, load_qa\n"
        "print(*resolve_responses_dir('./zresponse'), SHIPPED_QA, len(load_qa(SHIPPED_QA)))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    site = tmp_path / "site" / "llmkit"
    shipped, rows = done.stdout.split()[2:]
    assert done.stdout.split()[:2] == [str(site / "_zresponse"), "True"]
    assert shipped == str(site / "simulate" / "data" / "qa") and int(rows) >= 400


def test_seed_config_and_redis_keep_the_seeds_keys(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "binding:\n  port: 0\n  host: 127.0.0.1\nsource: file\n"
        f"redis:\n  url: redis://127.0.0.1:{redis_server.port}\n  prefix: {redis_prefix}\n"
        "tracking:\n  enabled: true\nlog_level: info\nsemaphore_limit: 50\nworkers: 1\ncache_ttl: 60\n"
    )
    with ServerProcess(tmp_path, "--config", str(config), command="simulate") as server:
        url = server.wait_listening()
        client = client_for(url)
        try:
            answer = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "resep nasi goreng"}]
            )
        finally:
            client.close()
        assert "Nasi Goreng" in (answer.choices[0].message.content or "")
        raw = redis.Redis(port=redis_server.port)
        try:
            names = json.loads(raw.get(f"{redis_prefix}:file_list") or b"[]")
            assert len(names) >= 12
            assert 590 <= raw.ttl(f"{redis_prefix}:file_list") <= 600
            file_keys = raw.keys(f"{redis_prefix}:file:*")
            assert file_keys, "the answered file is cached under {prefix}:file:{filename}"
            for key in file_keys:
                assert 50 <= raw.ttl(key) <= 60
                name = key.decode().split(":file:", 1)[1]
                assert raw.get(key) == (ROOT / "zresponse" / name).read_bytes()
        finally:
            raw.close()
        assert f"redis://127.0.0.1:{redis_server.port}?prefix={redis_prefix}" in server.stderr


def test_database_source_from_init_db_to_answers(tmp_path: Path, clickhouse_server: ClickHouseServer) -> None:
    db_url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/e2e_simulate"
    done = subprocess.run(
        [LLMKIT, "simulate", "init-db", "--sample", "--url", db_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "table response_simulator ready" in done.stdout
    first = json.loads(SAMPLE.read_text().splitlines()[0])
    env = {"LLMKIT_CLICKHOUSE_URL": db_url}
    with ServerProcess(
        tmp_path, "--port", "0", "--source", "database", command="simulate", env=env
    ) as server:
        url = server.wait_listening()
        client = client_for(url)
        try:
            answer = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": first["pertanyaan"]}]
            )
        finally:
            client.close()
    content = answer.choices[0].message.content or ""
    assert content.startswith(f"**Pertanyaan:** {first['pertanyaan']}")
    assert f"**Jawaban:** {first['jawaban']}" in content
    assert f"**Referensi:** {first['referensi']}" in content


def test_clickhouse_unreachable_at_startup_exits_1_naming_the_url(tmp_path: Path) -> None:
    db_url = f"clickhouse://127.0.0.1:{free_port()}/default"
    done = subprocess.run(
        [LLMKIT, "simulate", "--port", "0", "--source", "database"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "LLMKIT_CLICKHOUSE_URL": db_url},
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "listening on" not in done.stdout
    assert db_url in done.stderr.splitlines()[-1]


def test_bad_seed_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("binding:\n  prot: 1\n")
    done = subprocess.run(
        [LLMKIT, "simulate", "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert f"config file {config}: unknown key binding.prot" in done.stderr


def test_the_knobs_users_reach_for_are_flags(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    args = ("--port", "0", "--model", "my-model", "--rpm", "100", "--tpm", "100000", "--jitter", "0.5")
    body = json.dumps({"model": "my-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Content-Type": "application/json"}
    with ServerProcess(tmp_path, *args, command="simulate") as server:
        url = server.wait_listening()
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as response:
            assert json.load(response)["data"][0]["id"] == "my-model"
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["x-ratelimit-limit-requests"] == "100"
            assert response.headers["x-ratelimit-limit-tokens"] == "100000"
    with ServerProcess(tmp_path, "--port", "0", "--fault-503", "1", command="simulate") as server:
        url = server.wait_listening()
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("--fault-503 1 should answer every request with 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
    help_text = subprocess.run([LLMKIT, "simulate", "--help"], capture_output=True, text=True).stdout
    for flag in ("--model", "--rpm", "--tpm", "--jitter", "--fault-429", "--fault-500", "--fault-503"):
        assert flag in help_text
    done = subprocess.run([LLMKIT, "simulate", "--jitter", "2"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2


def test_every_knob_flag_sets_its_setting(served_settings: list[Settings]) -> None:
    # What each flag sets, read where the server would start (run_server), without starting one.
    from typer.testing import CliRunner

    from llmkit.cli.main import app

    flags = {
        "--model": ("my-model", "model", "my-model"),
        "--rpm": ("60", "rpm", 60),
        "--tpm": ("1000", "tpm", 1000),
        "--jitter": ("0.3", "jitter", 0.3),
        "--fault-429": ("0.1", "fault_rate_429", 0.1),
        "--fault-500": ("0.2", "fault_rate_500", 0.2),
        "--fault-503": ("0.05", "fault_rate_503", 0.05),
        "--fault-timeout": ("0.01", "fault_rate_timeout", 0.01),
        "--fault-disconnect": ("0.02", "fault_rate_disconnect", 0.02),
    }
    args = [part for flag, (value, _, _) in flags.items() for part in (flag, value)]
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 0, result.output
    [settings] = served_settings
    for flag, (_, key, expected) in flags.items():
        assert getattr(settings.simulate, key) == expected, flag
    origins = {key: origin for key, _, origin in settings.masked()}
    assert origins["simulate.fault_rate_429"] == "flag --fault-429"
