"""Seed 002's variables for `llmkit gateway`, through `llmkit config show --for gateway` and the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmkit.cli.gateway import gateway_settings
from llmkit.cli.main import app
from llmkit.settings import resolve_profile
from tests.e2e.test_gateway_cli import get_json
from tests.serve_process import ServerProcess
from tests.servers import free_port

# The variables of the seed's .env that one setting each takes as it is: (variable, text, setting, value).
PLAIN = [
    ("CACHE_ENABLED", "false", "gateway.cache_enabled", False),
    ("CACHE_DEFAULT_TTL", "7200", "cache.ttl", 7200.0),
    ("ANALYTICS_ENABLED", "no", "gateway.analytics_enabled", False),
    ("ANALYTICS_RETENTION_DAYS", "30", "gateway.analytics_retention_days", 30),
    ("MULTI_TENANT_MODE", "true", "gateway.require_api_key", True),
    ("SERVER_HOST", "0.0.0.0", "server.host", "0.0.0.0"),
    ("SERVER_PORT", "9090", "gateway.port", 9090),
    ("WORKERS", "4", "server.workers", 4),
    ("DATABASE_URL", "sqlite:///./data/x.db", "gateway.platform_url", "sqlite:///./data/x.db"),
    ("DATABASE_URL", "postgresql://u:pw@db:5432/x", "gateway.platform_url", "postgresql://u:****@db:5432/x"),
    ("DATABASE_POOL_SIZE", "20", "gateway.platform_pool_size", 20),
]


def show(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`llmkit config show --for gateway --json` under `env`: setting -> {value, origin}."""
    result = CliRunner().invoke(app, ["config", "show", "--for", "gateway", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    settings: dict[str, Any] = json.loads(result.stdout)["settings"]
    return settings


def refused(env: dict[str, str], *args: str) -> str:
    """What `llmkit config show --for gateway` says when it exits 2 under `env`."""
    result = CliRunner().invoke(app, ["config", "show", "--for", "gateway", *args], env=env)
    assert result.exit_code == 2, result.output
    return result.output


@pytest.mark.parametrize(("name", "text", "dotted", "value"), PLAIN)
def test_each_variable_sets_its_setting(name: str, text: str, dotted: str, value: Any) -> None:
    seen = show({name: text})[dotted]
    assert seen == {"value": value, "origin": f"env {name}"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("NO", False),
    ],
)
def test_booleans_read_true_false_1_0_yes_no_in_any_case(text: str, value: bool) -> None:
    assert show({"MULTI_TENANT_MODE": text})["gateway.require_api_key"]["value"] is value
    assert show({"CACHE_ENABLED": text})["gateway.cache_enabled"]["value"] is value


def test_redis_url_sets_a_tiered_cache_and_the_quota_limiter_with_its_parameters() -> None:
    env = {
        "REDIS_URL": "redis://:redis123@localhost:6379",
        "CACHE_PREFIX": "rustassistant:",
        "CACHE_MAX_MEMORY_ITEMS": "10000",
        "REDIS_POOL_SIZE": "10",
    }
    seen = show(env)
    assert seen["cache.url"] == {
        "value": "tiered+redis://:****@localhost:6379?prefix=rustassistant:&local_max_entries=10000"
        "&max_connections=10",
        "origin": "env REDIS_URL + env CACHE_PREFIX, CACHE_MAX_MEMORY_ITEMS, REDIS_POOL_SIZE",
    }
    assert seen["limiter.url"] == {
        "value": "redis://:****@localhost:6379?max_connections=10",
        "origin": "env REDIS_URL + env REDIS_POOL_SIZE",
    }
    # The URLs really build: the cache's memory tier is bounded by entries, the Redis pools by connections.
    from llmkit.core.cache import TieredCache, cache_from_url

    settings = gateway_settings(None, None, {}, env)
    cache = cache_from_url(settings.cache.url)
    assert isinstance(cache, TieredCache)


def test_redis_url_alone_sets_both_urls() -> None:
    seen = show({"REDIS_URL": "rediss://cache.internal:6380/2"})
    assert seen["cache.url"] == {"value": "tiered+rediss://cache.internal:6380/2", "origin": "env REDIS_URL"}
    assert seen["limiter.url"] == {"value": "rediss://cache.internal:6380/2", "origin": "env REDIS_URL"}


def test_a_sentinel_redis_url_sets_both_urls_with_its_parameters() -> None:
    env = {
        "REDIS_URL": "redis+sentinel://s1:26379,s2:26380/mymaster/1",
        "CACHE_PREFIX": "ra",
        "REDIS_POOL_SIZE": "7",
    }
    seen = show(env)
    assert seen["cache.url"]["value"] == (
        "tiered+redis+sentinel://s1:26379,s2:26380/mymaster/1?prefix=ra&max_connections=7"
    )
    assert seen["limiter.url"]["value"] == "redis+sentinel://s1:26379,s2:26380/mymaster/1?max_connections=7"


def test_url_parameters_apply_to_the_profiles_cache_url() -> None:
    # No REDIS_URL: the ha profile's URLs take the parameters; the default memory:// its entry bound.
    seen = show({"CACHE_PREFIX": "ra", "REDIS_POOL_SIZE": "5"}, "--profile", "ha")
    assert "prefix=ra" in seen["cache.url"]["value"] and "prefix=llmkit" not in seen["cache.url"]["value"]
    assert seen["cache.url"]["origin"].endswith(" + env CACHE_PREFIX, REDIS_POOL_SIZE")
    sentinels = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/mymaster/0"
    assert seen["limiter.url"]["value"] == f"redis+sentinel://{sentinels}?prefix=llmkit&max_connections=5"
    memory = show({"CACHE_MAX_MEMORY_ITEMS": "500", "CACHE_PREFIX": "ra"})
    assert memory["cache.url"] == {
        "value": "memory://?max_size_mb=256&max_entries=500",
        "origin": f"profile {resolve_profile('default')} + env CACHE_MAX_MEMORY_ITEMS",
    }


def test_llmkit_variables_win() -> None:
    env = {
        "REDIS_URL": "redis://r:6379",
        "CACHE_PREFIX": "ra",
        "LLMKIT_CACHE_URL": "memory://",
        "SERVER_HOST": "0.0.0.0",
        "LLMKIT_SERVER_HOST": "127.0.0.2",
        "MULTI_TENANT_MODE": "true",
        "LLMKIT_GATEWAY_REQUIRE_API_KEY": "false",
        "DATABASE_URL": "postgresql://db/x",
        "LLMKIT_GATEWAY_PLATFORM_URL": "sqlite:///./p.db",
    }
    seen = show(env)
    assert seen["cache.url"] == {"value": "memory://", "origin": "env LLMKIT_CACHE_URL"}
    assert seen["limiter.url"] == {"value": "redis://r:6379", "origin": "env REDIS_URL"}
    assert seen["server.host"] == {"value": "127.0.0.2", "origin": "env LLMKIT_SERVER_HOST"}
    assert seen["gateway.require_api_key"]["origin"] == "env LLMKIT_GATEWAY_REQUIRE_API_KEY"
    assert seen["gateway.platform_url"]["origin"] == "env LLMKIT_GATEWAY_PLATFORM_URL"


def test_flags_win() -> None:
    env = {"SERVER_PORT": "9000", "WORKERS": "4", "REDIS_URL": "redis://r:6379", "CACHE_PREFIX": "ra"}
    flags = {
        "gateway.port": (1234, "flag --port"),
        "server.workers": (2, "flag --workers"),
        "cache.url": ("redis://other:6379/1", "flag --cache-url"),
    }
    settings = gateway_settings(None, None, flags, env)
    assert (settings.gateway.port, settings.server.workers) == (1234, 2)
    assert settings.cache.url == "redis://other:6379/1", "a flag's URL is taken as written"
    assert settings.origins["cache.url"] == "flag --cache-url"
    assert settings.limiter.url == "redis://r:6379"


def test_the_long_names_win_over_host_and_port() -> None:
    seen = show({"HOST": "10.0.0.1", "SERVER_HOST": "10.0.0.2", "PORT": "8081", "SERVER_PORT": "8082"})
    assert seen["server.host"] == {"value": "10.0.0.2", "origin": "env SERVER_HOST"}
    assert seen["gateway.port"] == {"value": 8082, "origin": "env SERVER_PORT"}
    assert show({"HOST": "10.0.0.1", "PORT": "8081"})["gateway.port"]["origin"] == "env PORT"


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("CACHE_ENABLED", "maybe", "must be true/false, 1/0 or yes/no"),
        ("MULTI_TENANT_MODE", "on-ish", "must be true/false, 1/0 or yes/no"),
        ("ANALYTICS_ENABLED", "", "must be true/false, 1/0 or yes/no"),
        ("SERVER_PORT", "eighty", "must be a port"),
        ("WORKERS", "two", "must be a whole number"),
        ("CACHE_DEFAULT_TTL", "an hour", "must be a number"),
        ("DATABASE_POOL_SIZE", "0", "must be a whole number >= 1"),
        ("REDIS_POOL_SIZE", "-1", "must be a whole number >= 1"),
        ("CACHE_MAX_MEMORY_ITEMS", "lots", "must be a whole number >= 1"),
        ("CACHE_PREFIX", " ", "must not be empty"),
        ("REDIS_URL", "http://r:6379", "must be a redis://, rediss:// or redis+sentinel:// URL"),
    ],
)
def test_a_bad_value_exits_2_naming_the_variable(name: str, text: str, said: str) -> None:
    output = refused({name: text})
    assert f"environment variable {name} {said}" in output


def test_a_value_out_of_bounds_exits_2_naming_the_variable() -> None:
    output = refused({"ANALYTICS_RETENTION_DAYS": "99999"})
    assert "env ANALYTICS_RETENTION_DAYS: gateway.analytics_retention_days must be <= 36500" in output


def test_an_unsupported_database_exits_2_naming_sqlite_and_postgresql() -> None:
    env = {"DATABASE_URL": "mysql://root:secret@db:3306/app"}
    for args in (["config", "show", "--for", "gateway"], ["gateway", "--port", "0"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        assert "environment variable DATABASE_URL must be sqlite:///path.db or postgresql://" in result.output
        assert "secret" not in result.output
    # The same database from anywhere else is refused before the gateway listens.
    result = CliRunner().invoke(
        app, ["gateway", "--port", "0"], env={"LLMKIT_GATEWAY_PLATFORM_URL": "mysql://db/app"}
    )
    assert result.exit_code == 2, result.output
    assert "unsupported database; use sqlite:///path.db or postgresql://" in result.output


def test_an_unknown_command_for_config_show_exits_2() -> None:
    result = CliRunner().invoke(app, ["config", "show", "--for", "publish"])
    assert result.exit_code == 2
    assert "--for 'publish': one of gateway" in result.output


def test_beyond_loopback_without_an_admin_key_it_refuses_to_start(tmp_path: Path) -> None:
    env = {"LLMKIT_GATEWAY_ADMIN_KEY": ""}
    with ServerProcess(tmp_path, "--host", "0.0.0.0", "--port", "0", env=env, command="gateway") as server:
        assert server.wait(30) == 2
        said = server.stderr
    assert "refusing to listen on 0.0.0.0 without an admin credential" in said
    assert "set gateway.admin_key (env LLMKIT_GATEWAY_ADMIN_KEY)" in said


def test_beyond_loopback_with_an_admin_key_and_seed_variables_it_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "LLMKIT_GATEWAY_ADMIN_KEY": "an-admin-key-for-the-test",
        "SERVER_HOST": "0.0.0.0",
        "SERVER_PORT": str(port),
        "WORKERS": "1",
        "CACHE_DEFAULT_TTL": "60",
        "CACHE_MAX_MEMORY_ITEMS": "100",
    }
    with ServerProcess(tmp_path, env=env, command="gateway") as server:
        # The listening line names the address bound (ServerProcess.wait_listening expects 127.0.0.1).
        assert server.read_line(60) == f"llmkit gateway listening on http://0.0.0.0:{port}"
        assert get_json(f"http://127.0.0.1:{port}/health")["status"] == "healthy"
    assert "cache:    memory://?max_size_mb=256&max_entries=100 (ttl 60s)" in server.stderr
    assert "an-admin-key-for-the-test" not in server.stderr
