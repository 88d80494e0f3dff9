"""The seed chatbot backend's `config.toml` layout (or the same in YAML), read as one more settings layer."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError

# The seed's sections and keys -> the `section.key` each one sets here.
SEED_KEYS: dict[str, dict[str, str]] = {
    "server": {"host": "server.host", "port": "gateway.port", "workers": "server.workers"},
    "ollama": {"api_url": "gateway.upstreams", "model": "gateway.model", "keep_alive": "gateway.keep_alive"},
    "cache": {
        "max_size_mb": "gateway.cache_max_size_mb",
        "ttl_seconds": "cache.ttl",
        "enabled": "gateway.cache_enabled",
    },
    "conversation_cache": {
        "max_size_mb": "gateway.conversation_max_size_mb",
        "ttl_seconds": "gateway.conversation_ttl_s",
        "enabled": "gateway.conversation_enabled",
    },
    "batch": {
        "max_batch_size": "gateway.batch_max_size",
        "batch_timeout_ms": "gateway.batch_timeout_ms",
        "enable_deduplication": "gateway.deduplication",
    },
    "queue": {"max_concurrent": "gateway.max_concurrent", "max_queue_size": "gateway.max_queue_size"},
}


def _valid_keys() -> str:
    return ", ".join(f"{section}.{key}" for section, keys in SEED_KEYS.items() for key in keys)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file (YAML when it ends .yml or .yaml) into a mapping, with errors that name the file."""
    where = f"config file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{where}: cannot read it ({reason})") from exc
    if path.suffix.lower() in (".yml", ".yaml"):
        return _parse_yaml(text, where)
    try:
        # tomllib's message ends with "(at line L, column C)".
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {getattr(exc, 'problem', None) or exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected sections ({', '.join(SEED_KEYS)}), got {type(data).__name__}")
    return data


def seed_config_layer(path: Path) -> tuple[dict[str, Any], Path]:
    """Translate the seed's config.toml into llmkit's profile shape (type-checked as a profile afterwards)."""
    data = read_config_file(path)
    where = f"config file {path}"
    layer: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in SEED_KEYS and isinstance(body, dict):
            raise ConfigError(f"{where}: unknown section {section!r}; valid sections: {', '.join(SEED_KEYS)}")
        if section not in SEED_KEYS:
            raise ConfigError(f"{where}: unknown key {section!r}; valid keys: {_valid_keys()}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(
                f"{where}: {section} must be a section of {', '.join(SEED_KEYS[section])}; "
                f"got {type(body).__name__} {body!r}"
            )
        for key, value in body.items():
            dotted = SEED_KEYS[section].get(key)
            if dotted is None:
                raise ConfigError(
                    f"{where}: unknown key {section}.{key}; valid keys in {section}: "
                    f"{', '.join(SEED_KEYS[section])}"
                )
            ours, _, field = dotted.partition(".")
            layer.setdefault(ours, {})[field] = value
    if "upstreams" in layer.get("gateway", {}):
        # The seed only talks to Ollama; its api_url says which kind of upstream this is.
        layer["gateway"]["upstream_kind"] = "ollama"
    return layer, path
