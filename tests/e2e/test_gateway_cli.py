"""`llmkit gateway` as users start it: help, the seed's config.toml and variables, bad usage."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from llmkit.cli.main import app
from tests.serve_process import ServerProcess
from tests.servers import free_port
from tests.unit.test_gateway_seed_config import SEED_CONFIG


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_help_shows_the_seed_style_examples() -> None:
    result = CliRunner().invoke(app, ["gateway", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "llmkit gateway --config config.toml" in result.output
    assert "OLLAMA_API_URL=http://127.0.0.1:11434 llmkit gateway" in result.output
    assert (
        "llmkit gateway --kind openai --upstream http://127.0.0.1:4545/v1 --model gpt-4o-mini"
        in result.output
    )
    assert "--no-cache" in result.output and "--max-queue-size" in result.output


def test_the_root_help_lists_gateway() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "gateway" in result.output and "llmkit gateway --config config.toml" in result.output


def test_a_bad_config_path_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "config.toml"
    result = CliRunner().invoke(app, ["gateway", "--config", str(missing)])
    assert result.exit_code == 2
    assert f"config file {missing}: cannot read it (No such file or directory)" in result.output
    missing.write_text("[server]\nprot = 1\n")
    result = CliRunner().invoke(app, ["gateway", "--config", str(missing)])
    assert result.exit_code == 2
    assert "unknown key server.prot; valid keys in server: host, port, workers" in result.output


def test_a_bad_kind_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gateway", "--kind", "vllm"])
    assert result.exit_code == 2
    assert "flag --kind: gateway.upstream_kind must be one of ollama, openai; got 'vllm'" in result.output


def test_the_seeds_config_and_variables_reach_the_running_server(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SEED_CONFIG)
    port = free_port()
    upstream = f"http://127.0.0.1:{free_port()}"
    env = {
        # The seed's variables beat its config file (host 0.0.0.0, port 8080, the 172.18.0.111 upstream).
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OLLAMA_API_URL": upstream,
        "CACHE_MAX_SIZE_MB": "512",
        "RUST_LOG": "info,chatbot_backend=debug",
    }
    args = ("--config", str(config), "--workers", "1", "--cache-url", "memory://")
    with ServerProcess(tmp_path, *args, env=env, command="gateway") as server:
        url = server.wait_listening()
        assert server.port == port, "PORT chooses the port"
        assert get_json(f"{url}/health")["status"] == "healthy"
        stats = get_json(f"{url}/stats")
    config_seen = stats["config"]
    assert config_seen["upstreams"] == upstream
    assert config_seen["upstream_kind"] == "ollama"
    assert config_seen["cache_max_size_mb"] == 512
    assert (config_seen["model"], config_seen["keep_alive"]) == ("deepseek-r1:8b", "15m")
    assert (config_seen["max_concurrent"], config_seen["max_queue_size"]) == (1, 100)
    assert (config_seen["batch_max_size"], config_seen["batch_timeout_ms"]) == (3, 2000)
    assert (config_seen["conversation_max_size_mb"], config_seen["conversation_ttl_s"]) == (128, 1800)
    assert config_seen["deduplication"] is True and config_seen["cache_enabled"] is True
    assert "upstream: ollama " + upstream + " (model deepseek-r1:8b)" in server.stderr
    assert "cache:    memory:// (ttl 3600s, 512 MB)" in server.stderr
    assert f"curl {url}/api/chat-optimized" in server.stderr


def test_no_cache_and_flags_win(tmp_path: Path) -> None:
    env = {"PORT": "eighty", "LOG_LEVEL": "warn"}  # a flag for the same setting means PORT is not read
    args = ("--port", "0", "--host", "127.0.0.1", "--no-cache", "--max-concurrent", "3", "--kind", "openai")
    with ServerProcess(tmp_path, *args, env=env, command="gateway") as server:
        url = server.wait_listening()
        config_seen = get_json(f"{url}/stats")["config"]
    assert config_seen["cache_enabled"] is False
    assert (config_seen["max_concurrent"], config_seen["upstream_kind"]) == (3, "openai")
    assert "cache:    off" in server.stderr
