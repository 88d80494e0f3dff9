"""The seed chatbot backend's config.toml and environment variables, as `llmkit gateway` reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from llmkit.cli.gateway import gateway_settings
from llmkit.errors import ConfigError
from llmkit.gateway.seed_config import seed_config_layer
from llmkit.settings import Settings, load_settings

# The seed's config.toml, exactly as its README shows it.
SEED_CONFIG = """\
[server]
host = "0.0.0.0"
port = 8080
workers = 4                 # Number of worker threads

[ollama]
api_url = "http://172.18.0.111:11434"
model = "deepseek-r1:8b"
keep_alive = "15m"          # Keep model loaded in memory

[cache]
max_size_mb = 256           # Maximum cache size
ttl_seconds = 3600          # Time-to-live for cached entries
enabled = true

[conversation_cache]
max_size_mb = 128
ttl_seconds = 1800

[batch]
max_batch_size = 3          # Process up to 3 requests together
batch_timeout_ms = 2000     # Wait max 2s before processing batch
enable_deduplication = true # Deduplicate identical requests

[queue]
max_concurrent = 1          # Process 1 request at a time
max_queue_size = 100
"""

# The same settings in YAML.
SEED_CONFIG_YAML = """\
server: {host: 0.0.0.0, port: 8080, workers: 4}
ollama: {api_url: "http://172.18.0.111:11434", model: "deepseek-r1:8b", keep_alive: 15m}
cache: {max_size_mb: 256, ttl_seconds: 3600, enabled: true}
conversation_cache: {max_size_mb: 128, ttl_seconds: 1800}
batch: {max_batch_size: 3, batch_timeout_ms: 2000, enable_deduplication: true}
queue: {max_concurrent: 1, max_queue_size: 100}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def from_file(path: Path) -> Settings:
    return load_settings("default", env={}, layers=[seed_config_layer(path)])


def test_the_seeds_config_toml_loads_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", SEED_CONFIG)
    settings = from_file(path)
    assert (settings.server.host, settings.server.workers) == ("0.0.0.0", 4)
    gw = settings.gateway
    assert gw.port == 8080
    assert (gw.upstream_kind, gw.upstreams) == ("ollama", "http://172.18.0.111:11434")
    assert (gw.model, gw.keep_alive) == ("deepseek-r1:8b", "15m")
    assert (gw.cache_max_size_mb, settings.cache.ttl, gw.cache_enabled) == (256, 3600, True)
    assert (gw.conversation_max_size_mb, gw.conversation_ttl_s, gw.conversation_enabled) == (128, 1800, True)
    assert (gw.batch_max_size, gw.batch_timeout_ms, gw.deduplication) == (3, 2000, True)
    assert (gw.max_concurrent, gw.max_queue_size) == (1, 100)
    assert settings.origins["gateway.port"] == f"config {path}"
    assert settings.origins["gateway.upstream_kind"] == f"config {path}"
    assert settings.origins["cache.ttl"] == f"config {path}"
    # What the seed does not set keeps the profile's value.
    assert settings.origins["gateway.retries"] == f"profile {settings.profile}"


def test_the_same_structure_in_yaml_gives_the_same_settings(tmp_path: Path) -> None:
    toml = from_file(write(tmp_path / "config.toml", SEED_CONFIG))
    for name in ("config.yml", "config.yaml"):
        yaml = from_file(write(tmp_path / name, SEED_CONFIG_YAML))
        assert (yaml.server, yaml.gateway, yaml.cache) == (toml.server, toml.gateway, toml.cache)


def test_false_switches_and_conversation_enabled(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        "[cache]\nenabled = false\n[conversation_cache]\nenabled = false\n"
        "[batch]\nenable_deduplication = false\n",
    )
    gw = from_file(path).gateway
    assert (gw.cache_enabled, gw.conversation_enabled, gw.deduplication) == (False, False, False)


def test_unknown_sections_and_keys_name_the_file_the_key_and_the_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as info:
        seed_config_layer(path)
    message = str(info.value)
    assert f"config file {path}: unknown key server.prot" in message
    assert "valid keys in server: host, port, workers" in message
    write(path, "[redis]\nurl = 'redis://x'\n")
    with pytest.raises(ConfigError, match=r"unknown section 'redis'; valid sections: server, ollama, cache"):
        seed_config_layer(path)
    write(path, "port = 8080\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'port'; valid keys: server.host, server.port, server.w"
    ):
        seed_config_layer(path)
    write(tmp_path / "c.yml", "server: 8080\n")
    with pytest.raises(ConfigError, match="server must be a section of host, port, workers; got int 8080"):
        seed_config_layer(tmp_path / "c.yml")


def test_bad_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[server]\nhost = "0.0.0.0"\nport = eighty\n')
    with pytest.raises(ConfigError, match=rf"config file {path}: invalid TOML: .*line 3"):
        seed_config_layer(path)
    write(tmp_path / "config.yml", "server: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yml: invalid YAML at line 2"):
        seed_config_layer(tmp_path / "config.yml")
    with pytest.raises(ConfigError, match=r"nothing.toml: cannot read it \(No such file or directory\)"):
        seed_config_layer(tmp_path / "nothing.toml")


def test_values_are_type_checked_like_a_profile(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[server]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match=rf"config file {path}: gateway.port must be an integer"):
        from_file(path)
    write(path, "[queue]\nmax_concurrent = 0\n")
    with pytest.raises(ConfigError, match=r"gateway.max_concurrent must be >= 1; got 0"):
        from_file(path)


def flag(dotted: str, value: Any) -> dict[str, tuple[Any, str]]:
    return {dotted: (value, f"flag {dotted}")}


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A profile that sets every setting the precedence test follows."""
    return write(
        tmp_path / "p.yml",
        "server:\n  host: profile-host\ngateway:\n  port: 1001\n  upstreams: http://profile:1\n"
        "  cache_max_size_mb: 1\n  max_queue_size: 7\n  upstream_kind: openai\n",
    )


def test_precedence_flag_llmkit_env_seed_env_config_profile(tmp_path: Path, profile: Path) -> None:
    config = write(
        tmp_path / "config.toml",
        '[server]\nhost = "config-host"\nport = 1002\n[ollama]\napi_url = "http://config:2"\n'
        "[cache]\nmax_size_mb = 256\n",
    )
    env = {
        "PORT": "1003",
        "LLMKIT_GATEWAY_PORT": "1004",
        "HOST": "seed-host",
        "LLMKIT_SERVER_HOST": "llmkit-host",
        "OLLAMA_API_URL": "http://seed:3",
    }
    settings = gateway_settings(str(profile), config, flag("gateway.port", 1005), env)
    assert settings.gateway.port == 1005  # flag
    assert settings.server.host == "llmkit-host"  # LLMKIT_* beats the seed's HOST
    assert settings.gateway.upstreams == "http://seed:3"  # the seed's variable beats the config file
    assert settings.gateway.cache_max_size_mb == 256  # the config file beats the profile
    assert settings.gateway.max_queue_size == 7  # the profile
    origins = settings.origins
    assert origins["gateway.port"] == "flag gateway.port"
    assert origins["server.host"] == "env LLMKIT_SERVER_HOST"
    assert origins["gateway.upstreams"] == "env OLLAMA_API_URL"
    assert origins["gateway.cache_max_size_mb"] == f"config {config}"
    assert origins["gateway.max_queue_size"] == f"profile {profile}"


def test_ollama_api_url_means_an_ollama_upstream_unless_kind_is_chosen(profile: Path) -> None:
    env = {"OLLAMA_API_URL": "http://ollama:11434"}
    settings = gateway_settings(str(profile), None, {}, env)
    assert (settings.gateway.upstream_kind, settings.gateway.upstreams) == ("ollama", "http://ollama:11434")
    settings = gateway_settings(str(profile), None, flag("gateway.upstream_kind", "openai"), env)
    assert settings.gateway.upstream_kind == "openai"
    settings = gateway_settings(str(profile), None, {}, {**env, "LLMKIT_GATEWAY_UPSTREAM_KIND": "openai"})
    assert settings.gateway.upstream_kind == "openai"
    # Without the variable the profile's kind stands.
    assert gateway_settings(str(profile), None, {}, {}).gateway.upstream_kind == "openai"


def test_config_path_is_the_config_file_unless_config_is_given(tmp_path: Path) -> None:
    by_env = write(tmp_path / "env.toml", "[queue]\nmax_queue_size = 11\n")
    by_flag = write(tmp_path / "flag.toml", "[queue]\nmax_queue_size = 22\n")
    env = {"CONFIG_PATH": str(by_env)}
    assert gateway_settings("default", None, {}, env).gateway.max_queue_size == 11
    assert gateway_settings("default", by_flag, {}, env).gateway.max_queue_size == 22


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"LOG_LEVEL": "trace"}, "debug"),
        ({"LOG_LEVEL": "DEBUG"}, "debug"),
        ({"LOG_LEVEL": "Warn"}, "warning"),
        ({"LOG_LEVEL": "warning"}, "warning"),
        ({"LOG_LEVEL": "error"}, "error"),
        ({"RUST_LOG": "info,chatbot_backend=debug"}, "info"),
        ({"RUST_LOG": "chatbot_backend::services=debug,chatbot_backend::handlers=info"}, "debug"),
        ({"RUST_LOG": "chatbot_backend::services::cache=trace"}, "debug"),
        ({"LOG_LEVEL": "error", "RUST_LOG": "debug"}, "error"),
        ({"LOG_LEVEL": "error", "LLMKIT_SERVER_LOG_LEVEL": "info"}, "info"),
    ],
)
def test_log_level_forms(env: dict[str, str], level: str) -> None:
    assert gateway_settings("default", None, {}, env).server.log_level == level


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "environment variable PORT must be a port (0-65535); got 'eighty'"),
        ({"PORT": "70000"}, "environment variable PORT must be a port"),
        ({"CACHE_MAX_SIZE_MB": "big"}, "environment variable CACHE_MAX_SIZE_MB must be a number"),
        ({"CACHE_MAX_SIZE_MB": "-1"}, "env CACHE_MAX_SIZE_MB: gateway.cache_max_size_mb must be >= 0"),
        ({"LOG_LEVEL": "loud"}, "environment variable LOG_LEVEL must be a log level (trace, debug"),
        ({"OLLAMA_API_URL": " "}, "environment variable OLLAMA_API_URL must not be empty"),
        ({"CONFIG_PATH": "/nowhere/config.toml"}, "CONFIG_PATH: config file /nowhere/config.toml: cannot"),
    ],
)
def test_a_bad_variable_exits_2_naming_it(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as info:
        gateway_settings("default", None, {}, env)
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_flag_hides_a_bad_seed_variable() -> None:
    # A variable is not even parsed when a flag sets the same setting.
    settings = gateway_settings("default", None, flag("gateway.port", 0), {"PORT": "eighty"})
    assert settings.gateway.port == 0
