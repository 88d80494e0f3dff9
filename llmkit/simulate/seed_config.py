"""The seed simulator's own `config.yml` layout, read as one more settings layer (`--config FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError
from llmkit.settings import LOG_LEVELS as PYTHON_LEVELS
from llmkit.settings import read_profile

# The seed's keys: top-level scalars and the keys of its nested sections.
SEED_SCALARS = ("source", "log_level", "channel_capacity", "semaphore_limit", "workers", "cache_ttl")
SEED_SECTIONS = {
    "binding": ("host", "port"),
    "database": ("url", "username", "password"),
    "redis": ("url", "prefix"),
    "tracking": ("enabled",),
}
# The seed logs with env_logger's level names; ours are Python's.
LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
}
_LEVEL_HINT = f"must be a log level ({', '.join(LOG_LEVELS)}) or a RUST_LOG filter like info,app=debug"


def env_logger_level(text: str) -> str:
    """A level name or a RUST_LOG filter (`info,chatbot_backend=debug`) -> our log level; else ValueError."""
    bare: str | None = None
    per_module: list[str] = []
    # env_logger's syntax: comma-separated `level` or `module=level` directives, then an optional `/regex`.
    for directive in text.split("/", 1)[0].split(","):
        module, _, level = directive.strip().lower().rpartition("=")
        if not level and not module:
            continue
        if level not in LOG_LEVELS:
            raise ValueError(_LEVEL_HINT)
        if module:
            per_module.append(LOG_LEVELS[level])
        else:
            bare = LOG_LEVELS[level]
    if bare is not None:
        return bare
    if not per_module:
        raise ValueError(_LEVEL_HINT)
    # Only module levels: those modules are the seed's own code, which here is all of llmkit, so the most
    # verbose one applies (settings.LOG_LEVELS runs from the most verbose).
    return min(per_module, key=PYTHON_LEVELS.index)


def _valid_keys() -> str:
    nested = [f"{section}.{key}" for section, keys in SEED_SECTIONS.items() for key in keys]
    return ", ".join([*SEED_SCALARS, *nested])


def _check_shape(data: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if key in SEED_SCALARS:
            continue
        if key not in SEED_SECTIONS:
            raise ConfigError(f"config file {path}: unknown key {key!r}; valid keys: {_valid_keys()}")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"config file {path}: {key} must be a mapping of {', '.join(SEED_SECTIONS[key])}"
            )
        for sub in value:
            if sub not in SEED_SECTIONS[key]:
                raise ConfigError(f"config file {path}: unknown key {key}.{sub}; valid keys: {_valid_keys()}")


def seed_config_layer(path: Path) -> tuple[dict[str, Any], Path]:
    """Translate the seed's config.yml into llmkit's profile shape (checked like a profile afterwards)."""
    data = read_profile(path)
    _check_shape(data, path)
    binding = data.get("binding") or {}
    database = data.get("database") or {}
    redis = data.get("redis") or {}
    tracking = data.get("tracking") or {}
    layer: dict[str, dict[str, Any]] = {"server": {}, "simulate": {}, "cache": {}, "clickhouse": {}}
    if "host" in binding:
        layer["server"]["host"] = binding["host"]
    if "port" in binding:
        layer["simulate"]["port"] = binding["port"]
    if "workers" in data:
        layer["server"]["workers"] = data["workers"]
    if "log_level" in data:
        level = str(data["log_level"]).lower()
        if level not in LOG_LEVELS:
            raise ConfigError(
                f"config file {path}: log_level must be one of {', '.join(LOG_LEVELS)}; got {level!r}"
            )
        layer["server"]["log_level"] = LOG_LEVELS[level]
    for key in ("source", "channel_capacity", "semaphore_limit"):
        if key in data:
            layer["simulate"][key] = data[key]
    if "enabled" in tracking:
        layer["simulate"]["tracking"] = tracking["enabled"]
    if "cache_ttl" in data:
        layer["cache"]["ttl"] = data["cache_ttl"]
    for key in ("url", "username", "password"):
        if key in database:
            layer["clickhouse"][key] = database[key]
    if redis.get("url"):
        url = str(redis["url"])
        # The seed names keys `{prefix}:...`; our Redis cache puts its `prefix` parameter before every key.
        prefix = str(redis.get("prefix") or "rai_simulator")
        layer["cache"]["url"] = f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    return {section: values for section, values in layer.items() if values}, path
