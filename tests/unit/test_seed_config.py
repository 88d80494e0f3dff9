from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.errors import ConfigError
from llmkit.settings import load_settings
from llmkit.simulate.seed_config import seed_config_layer

# The seed simulator's config.yml, exactly as its README shows it.
SEED_CONFIG = """\
binding:
  port: 4545
  host: 0.0.0.0
source: file # file or database
database:
  url: http://127.0.0.1:8123
  username: simulator_app
  password: "your_password"
redis:
  url: redis://127.0.0.1:6379
  prefix: rai_simulator
tracking:
  enabled: false
log_level: info
channel_capacity: 1000
semaphore_limit: 10000
workers: 8
cache_ttl: 60
"""


def test_the_seeds_config_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(SEED_CONFIG)
    settings = load_settings("default", env={}, layers=[seed_config_layer(path)])
    assert settings.server.host == "0.0.0.0"
    assert settings.server.workers == 8
    assert settings.simulate.port == 4545
    assert settings.simulate.source == "file"
    assert settings.simulate.semaphore_limit == 10000
    assert settings.simulate.channel_capacity == 1000
    assert settings.simulate.tracking is False
    assert settings.cache.ttl == 60
    assert settings.cache.url == "redis://127.0.0.1:6379?prefix=rai_simulator"
    assert settings.clickhouse.url == "http://127.0.0.1:8123"
    assert settings.clickhouse.username == "simulator_app"
    assert settings.clickhouse.password == "your_password"
    assert settings.origins["simulate.port"] == f"config {path}"


def test_seed_config_sits_between_profile_and_env(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("binding:\n  port: 5000\nlog_level: warn\n")
    settings = load_settings(
        "default", env={"LLMKIT_SIMULATE_PORT": "6000"}, layers=[seed_config_layer(path)]
    )
    assert settings.simulate.port == 6000
    assert settings.server.log_level == "warning"  # the seed's env_logger name, translated


def test_seed_config_errors_name_the_file_and_the_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("binding:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key binding.prot; valid keys: source, log_level"):
        seed_config_layer(path)
    path.write_text("semaphore: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'semaphore'"):
        seed_config_layer(path)
    path.write_text("binding:\n  port: many\n")
    with pytest.raises(ConfigError, match=r"config file .*config.yml: simulate.port must be an integer"):
        load_settings("default", env={}, layers=[seed_config_layer(path)])
    path.write_text("log_level: loud\n")
    with pytest.raises(ConfigError, match="log_level must be one of trace"):
        seed_config_layer(path)
