from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llmkit.errors import ConfigError
from llmkit.settings import (
    SECTIONS,
    ServerSettings,
    Settings,
    load_settings,
    mask_url,
    read_profile,
    resolve_profile,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "p.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_profile_mirrors_the_dataclass_defaults() -> None:
    from_file = load_settings("default", env={})
    built_in = Settings()
    for name in SECTIONS:
        assert getattr(from_file, name) == getattr(built_in, name), name
    assert from_file.profile.endswith("default.yml")


@pytest.mark.parametrize("name", ["default", "local", "ha"])
def test_shipped_profiles_load(name: str) -> None:
    settings = load_settings(name, env={})
    assert settings.profile == str(REPO / "profiles" / f"{name}.yml")


def test_local_and_ha_profiles_point_at_redis_and_clickhouse() -> None:
    local = load_settings("local", env={})
    assert local.cache.url.startswith("redis://127.0.0.1:6379")
    ha = load_settings("ha", env={})
    # Redis behind Sentinels, as deploy/compose.yaml and scripts/ha-local.sh run it.
    assert ha.cache.url.startswith("tiered+redis+sentinel://sentinel-1:26379,")
    assert ha.queue.url.startswith("redis+sentinel://") and ha.limiter.url.startswith("redis+sentinel://")
    assert ha.simulate.source == "database"


def test_precedence_defaults_profile_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  workers: 3\n  log_level: debug\ncache:\n  ttl: 10\n")
    env = {"LLMKIT_SERVER_LOG_LEVEL": "warning", "LLMKIT_CACHE_TTL": "20", "LLMKIT_SIMULATE_PORT": "5000"}
    settings = load_settings(
        str(path), flags={"cache.ttl": (30.0, "flag --ttl"), "server.host": None}, env=env
    )
    assert settings.server.host == "127.0.0.1"  # default (the flag was not given)
    assert settings.server.workers == 3  # profile
    assert settings.server.log_level == "warning"  # env beats profile
    assert settings.cache.ttl == 30.0  # flag beats env
    assert settings.simulate.port == 5000  # env beats default
    origins = settings.origins
    assert "server.host" not in origins
    assert origins["server.workers"] == f"profile {path}"
    assert origins["server.log_level"] == "env LLMKIT_SERVER_LOG_LEVEL"
    assert origins["cache.ttl"] == "flag --ttl"
    rows = {key: origin for key, _, origin in settings.items()}
    assert rows["server.host"] == "default"


def test_llmkit_profile_env_chooses_the_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "queue:\n  capacity: 7\n")
    assert load_settings(None, env={"LLMKIT_PROFILE": str(path)}).queue.capacity == 7


def test_env_strings_are_typed() -> None:
    env = {
        "LLMKIT_SERVER_ACCESS_LOG": "off",
        "LLMKIT_SERVER_MAX_BODY_MB": "2.5",
        "LLMKIT_SERVER_WORKERS": "4",
    }
    server = load_settings("default", env=env).server
    assert server == dataclasses.replace(ServerSettings(), access_log=False, max_body_mb=2.5, workers=4)


def test_empty_profile_is_all_defaults(tmp_path: Path) -> None:
    assert load_settings(str(write(tmp_path, "")), env={}).server == ServerSettings()


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(str(write(tmp_path, text)), env=env or {})
    return str(info.value)


def test_unknown_key_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "cache:\n  urll: memory://\n")
    assert str(tmp_path / "p.yml") in message
    assert "cache.urll" in message
    assert "valid keys in cache: url, ttl" in message


def test_unknown_section_lists_sections(tmp_path: Path) -> None:
    message = error_of(tmp_path, "cachee:\n  url: memory://\n")
    assert "unknown section 'cachee'" in message
    assert "server, cache, limiter, queue" in message


def test_wrong_type_names_expected_type(tmp_path: Path) -> None:
    message = error_of(tmp_path, "server:\n  workers: many\n")
    assert str(tmp_path / "p.yml") in message
    assert "server.workers must be an integer; got str 'many'" in message
    assert "true or false" in error_of(tmp_path, "server:\n  access_log: 3\n")
    assert "quote it" in error_of(tmp_path, "clickhouse:\n  password: 1234\n")
    # YAML's true is not an integer.
    assert "must be an integer" in error_of(tmp_path, "server:\n  workers: true\n")


def test_choices_and_bounds(tmp_path: Path) -> None:
    assert "one of debug, info, warning, error" in error_of(tmp_path, "server:\n  log_level: loud\n")
    assert "simulate.port must be <= 65535" in error_of(tmp_path, "simulate:\n  port: 70000\n")
    assert "server.workers must be >= 1" in error_of(tmp_path, "server:\n  workers: 0\n")


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    assert "section cache must be a mapping" in error_of(tmp_path, "cache: memory://\n")
    assert "expected a mapping of sections" in error_of(tmp_path, "- a\n- b\n")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "server:\n  host: [unclosed\n")
    assert "invalid YAML at line" in message and str(tmp_path / "p.yml") in message


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        read_profile(folder)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "missing.yml"), env={})


def test_unknown_profile_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_profile("nosuch")
    assert "known profiles: default, ha, local" in str(info.value)


def test_env_errors(tmp_path: Path) -> None:
    assert "LLMKIT_CACHE_TLL: unknown key cache.tll; valid keys in cache: url, ttl" in error_of(
        tmp_path, "", env={"LLMKIT_CACHE_TLL": "3"}
    )
    assert "LLMKIT_NOPE_X: unknown section" in error_of(tmp_path, "", env={"LLMKIT_NOPE_X": "1"})
    assert "LLMKIT_SERVER_WORKERS: must be an integer; got 'x'" in error_of(
        tmp_path, "", env={"LLMKIT_SERVER_WORKERS": "x"}
    )


def test_flag_for_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="valid keys in server"):
        load_settings("default", flags={"server.nope": 1}, env={})


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "clickhouse:\n  password: hunter2\ncache:\n  url: redis://:pw@h:6379/0?prefix=x\n")
    masked = {key: value for key, value, _ in load_settings(str(path), env={}).masked()}
    assert masked["clickhouse.password"] == "********"
    assert masked["cache.url"] == "redis://:****@h:6379/0?prefix=x"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
