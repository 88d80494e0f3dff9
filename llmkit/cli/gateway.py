"""`llmkit gateway`: the chatbot backend in front of upstream model servers (Ollama or OpenAI-compatible)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import (
    EXIT_USAGE,
    TELEMETRY_ENV,
    HostOpt,
    PortOpt,
    ProfileOpt,
    SeedEnv,
    SeedParser,
    WorkersOpt,
    fail,
    llmkit_env_name,
    parse_bool,
    parse_count,
    parse_number,
    parse_port,
    parse_text,
    seed_env_flags,
    settings_or_exit,
)

if TYPE_CHECKING:
    from llmkit.settings import Settings


def env_logger_level(text: str) -> str:
    """A level name or a RUST_LOG filter -> our log level (loaded when read: `llmkit --help` stays fast)."""
    from llmkit.simulate.seed_config import env_logger_level as parse

    return parse(text)


def redis_url(text: str) -> str:
    """A redis://, rediss:// or redis+sentinel:// URL as given; ValueError otherwise."""
    url = parse_text(text)
    if url.partition("://")[0].lower() not in ("redis", "rediss", "redis+sentinel") or "://" not in url:
        raise ValueError("must be a redis://, rediss:// or redis+sentinel:// URL")
    return url


def tiered_redis_url(text: str) -> str:
    """REDIS_URL as the response cache: Redis with a memory tier that keeps serving if Redis goes away."""
    return "tiered+" + redis_url(text)


def database_url(text: str) -> str:
    """A URL of a platform store the gateway supports (sqlite, postgresql); ValueError otherwise."""
    from llmkit.platform.store import STORES

    url = parse_text(text)
    if url.partition(":")[0].lower() not in STORES:
        raise ValueError("must be sqlite:///path.db or postgresql://user:password@host:5432/db")
    return url


# The seeds' variables, honoured where their deployments set them; LLMKIT_* variables and flags win.
# Where two variables set one setting, the first here wins: SERVER_HOST and SERVER_PORT (seed 002) before
# HOST and PORT (seed 001), since shells and platforms set the short names for other programs too;
# LOG_LEVEL before RUST_LOG (the seed's own).
SEED_ENV: SeedEnv = {
    "SERVER_HOST": ("server.host", parse_text),
    "HOST": ("server.host", parse_text),
    "SERVER_PORT": ("gateway.port", parse_port),
    "PORT": ("gateway.port", parse_port),
    "WORKERS": ("server.workers", parse_count),
    "OLLAMA_API_URL": ("gateway.upstreams", parse_text),
    "CACHE_MAX_SIZE_MB": ("gateway.cache_max_size_mb", parse_number),
    "LOG_LEVEL": ("server.log_level", env_logger_level),
    "RUST_LOG": ("server.log_level", env_logger_level),
    # Seed 002: the response cache fails over to its memory tier; tenant quotas count in Redis, so
    # replicas share them.
    "REDIS_URL": (("cache.url", tiered_redis_url), ("limiter.url", redis_url)),
    "CACHE_ENABLED": ("gateway.cache_enabled", parse_bool),
    "CACHE_DEFAULT_TTL": ("cache.ttl", parse_number),
    "ANALYTICS_ENABLED": ("gateway.analytics_enabled", parse_bool),
    "ANALYTICS_RETENTION_DAYS": ("gateway.analytics_retention_days", parse_count),
    "MULTI_TENANT_MODE": ("gateway.require_api_key", parse_bool),
    "DATABASE_URL": ("gateway.platform_url", database_url),
    "DATABASE_POOL_SIZE": ("gateway.platform_pool_size", parse_count),
    **TELEMETRY_ENV,
}
# Seed 002's variables that set a parameter of cache.url / limiter.url, whichever of REDIS_URL, the config
# file, the profile or the default chose that URL (one given by a flag or LLMKIT_* is taken as written):
# setting -> the URL's kind -> variable -> parameter. A variable a kind has no parameter for does not apply
# there (a memory:// cache has no key prefix and no connections).
SEED_URL_ENV: dict[str, dict[str, dict[str, str]]] = {
    "cache.url": {
        "memory": {"CACHE_MAX_MEMORY_ITEMS": "max_entries"},
        "redis": {"CACHE_PREFIX": "prefix", "REDIS_POOL_SIZE": "max_connections"},
        "tiered+redis": {
            "CACHE_PREFIX": "prefix",
            # The seed bounds its memory cache by entries: the memory tier's entry bound (its byte
            # budget, local_max_size_mb or CACHE_MAX_SIZE_MB, holds as well).
            "CACHE_MAX_MEMORY_ITEMS": "local_max_entries",
            "REDIS_POOL_SIZE": "max_connections",
        },
    },
    "limiter.url": {"redis": {"REDIS_POOL_SIZE": "max_connections"}},
}
SEED_URL_PARSERS: dict[str, SeedParser] = {
    "CACHE_PREFIX": parse_text,
    "CACHE_MAX_MEMORY_ITEMS": parse_count,
    "REDIS_POOL_SIZE": parse_count,
}
CHAT_BODY = '{"messages":[{"role":"user","content":"What is Rust?"}],"stream":false}'

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The seed's config.toml (server, ollama, cache, batch, queue...; YAML if .yml), read after "
        "the profile. Default: $CONFIG_PATH.",
        show_default=False,
    ),
]


def _config_layers(config: Path | None, env: Mapping[str, str]) -> Any:
    """Reads --config, or CONFIG_PATH when --config is not given, inside settings_or_exit's error guard."""
    from_env = config is None and bool(env.get("CONFIG_PATH"))
    path = Path(env["CONFIG_PATH"]) if from_env else config
    if path is None:
        return None

    def read() -> list[tuple[dict[str, Any], Path]]:
        from llmkit.errors import ConfigError
        from llmkit.gateway.seed_config import seed_config_layer

        try:
            return [seed_config_layer(path)]
        except ConfigError as exc:
            if from_env:
                raise ConfigError(f"environment variable CONFIG_PATH: {exc}") from exc
            raise

    return read


def gateway_settings(
    profile: str | None, config: Path | None, flags: Mapping[str, Any], env: Mapping[str, str]
) -> Settings:
    """Defaults < profile < the seed's config file < its variables < LLMKIT_* < flags; exits 2 when bad."""
    merged = {**flags, **seed_env_flags(SEED_ENV, env, flags)}
    kind = "gateway.upstream_kind"
    from_ollama_env = merged.get("gateway.upstreams", (None, ""))[1] == "env OLLAMA_API_URL"
    if from_ollama_env and merged.get(kind, (None,))[0] is None and llmkit_env_name(kind) not in env:
        # The variable names an Ollama server, whatever kind the profile or config file chose.
        merged[kind] = ("ollama", "env OLLAMA_API_URL")
    layers = _config_layers(config, env)
    settings = settings_or_exit(profile, merged, layers, env=env)
    url_flags = seed_url_flags(settings, env)
    return settings_or_exit(profile, {**merged, **url_flags}, layers, env=env) if url_flags else settings


def seed_url_flags(settings: Settings, env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """cache.url and limiter.url with SEED_URL_ENV's parameters set, for those no flag or LLMKIT_* gave."""
    from urllib.parse import parse_qsl, urlencode

    values: dict[str, str] = {}
    for name, parse in SEED_URL_PARSERS.items():
        if name in env:
            try:
                values[name] = str(parse(env[name]))
            except ValueError as exc:
                fail(f"configuration error: environment variable {name} {exc}; got {env[name]!r}", EXIT_USAGE)
    found: dict[str, tuple[str, str]] = {}
    for dotted, kinds in SEED_URL_ENV.items():
        section, _, key = dotted.partition(".")
        url, origin = getattr(getattr(settings, section), key), settings.origins.get(dotted, "default")
        if origin.startswith(("flag ", "env LLMKIT_")):
            continue
        # Split by hand: urlunsplit would turn memory://?... into memory:?...
        base, _, query = url.partition("?")
        params = kinds.get(
            base.partition(":")[0].lower().replace("rediss", "redis").replace("+sentinel", ""), {}
        )
        names = [name for name in params if name in values]
        if not names:
            continue
        kept = [(k, v) for k, v in parse_qsl(query) if k not in {params[n] for n in names}]
        kept += [(params[name], values[name]) for name in names]
        found[dotted] = (f"{base}?{urlencode(kept, safe=':')}", f"{origin} + env {', '.join(names)}")
    return found


def _masked_upstreams(upstreams: str) -> str:
    from llmkit.settings import mask_url

    parts = []
    for part in upstreams.split(","):
        url, star, weight = part.strip().rpartition("*")
        # "http://gpu1:11434*3": the weight is not part of the URL (urlsplit would read it as the port).
        parts.append(f"{mask_url(url)}*{weight}" if star and weight.isdigit() else mask_url(part.strip()))
    return ", ".join(parts)


def banner(settings: Settings) -> Any:
    """Where answers come from, how much may wait, the cache, and a request to paste."""
    from llmkit.settings import mask_url

    gw = settings.gateway
    if gw.cache_enabled:
        size = f", {gw.cache_max_size_mb:g} MB" if gw.cache_max_size_mb else ""
        cache = f"{mask_url(settings.cache.url)} (ttl {settings.cache.ttl:g}s{size})"
    else:
        cache = "off"

    def lines(url: str) -> list[str]:
        return [
            f"  upstream: {gw.upstream_kind} {_masked_upstreams(gw.upstreams)} (model {gw.model})",
            f"  queue:    {gw.max_concurrent} upstream calls at once, {gw.max_queue_size} waiting at most",
            f"  cache:    {cache}",
            f"  try:      curl {url}/api/chat-optimized -H 'Content-Type: application/json' -d '{CHAT_BODY}'",
        ]

    return lines


def gateway(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="Upstream URLs, comma-separated, each with an optional weight: "
            "http://gpu1:11434*3,http://gpu2:11434.",
            show_default="gateway.upstreams",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="ollama (POST /api/chat) or openai (POST /chat/completions, URL ending /v1)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="The model of requests that name none.")
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, help="Upstream calls at once per process.")
    ] = None,
    max_queue_size: Annotated[
        int | None, typer.Option("--max-queue-size", min=1, help="Requests that may wait; then 429.")
    ] = None,
    cache_url: Annotated[
        str | None,
        typer.Option(
            "--cache-url", help="Response cache: memory://, redis://HOST:6379/0, tiered+redis://..."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not cache responses.")] = False,
) -> None:
    """Serve the chatbot backend: POST /api/chat-optimized, /api/chat-queue, /api/cache-stats, GET /health.

    It caches answers, shares one upstream call among identical requests, queues calls by priority.
    The seed's config.toml (--config, or CONFIG_PATH) works as in the seed, and so do its variables.

    Seed 001: HOST, PORT, OLLAMA_API_URL, CACHE_MAX_SIZE_MB, LOG_LEVEL (or RUST_LOG).

    Seed 002: REDIS_URL (cache tiered over Redis, and quotas), CACHE_ENABLED, CACHE_PREFIX,
    CACHE_MAX_MEMORY_ITEMS, CACHE_DEFAULT_TTL, ANALYTICS_ENABLED, ANALYTICS_RETENTION_DAYS, MULTI_TENANT_MODE,
    SERVER_HOST, SERVER_PORT (before HOST, PORT), WORKERS, DATABASE_URL (sqlite or postgresql),
    DATABASE_POOL_SIZE, REDIS_POOL_SIZE, and tracing: TELEMETRY_ENABLED, OTLP_ENDPOINT, SAMPLING_RATE,
    SERVICE_NAME, ENVIRONMENT (docs/telemetry.md; the table: docs/architecture.md).

    LLMKIT_* variables and flags win over them; `llmkit config show --for gateway` shows what each set.
    Beyond loopback (--host 0.0.0.0) it needs an admin key: set LLMKIT_GATEWAY_ADMIN_KEY.

    Examples:

      llmkit gateway --config config.toml

      OLLAMA_API_URL=http://127.0.0.1:11434 llmkit gateway

      REDIS_URL=redis://127.0.0.1:6379 MULTI_TENANT_MODE=true llmkit gateway

      llmkit gateway --kind openai --upstream http://127.0.0.1:4545/v1 --model gpt-4o-mini
    """
    flags: dict[str, Any] = {
        "server.host": (host, "flag --host"),
        "server.workers": (workers, "flag --workers"),
        "gateway.port": (port, "flag --port"),
        "gateway.upstreams": (upstream, "flag --upstream"),
        "gateway.upstream_kind": (kind, "flag --kind"),
        "gateway.model": (model, "flag --model"),
        "gateway.max_concurrent": (max_concurrent, "flag --max-concurrent"),
        "gateway.max_queue_size": (max_queue_size, "flag --max-queue-size"),
        "cache.url": (cache_url, "flag --cache-url"),
        "gateway.cache_enabled": (False if no_cache else None, "flag --no-cache"),
    }
    settings = gateway_settings(profile, config, flags, os.environ)
    from llmkit.cli.serving import run_server
    from llmkit.core.auth import refuse_open_bind
    from llmkit.errors import ConfigError
    from llmkit.gateway.app import create_app
    from llmkit.platform.store import platform_store_from_url

    try:
        refuse_open_bind(
            settings.server.host,
            bool(settings.gateway.admin_key),
            "gateway.admin_key",
            "LLMKIT_GATEWAY_ADMIN_KEY",
        )
        # Built, not opened: a database the store does not support fails here, before anything listens.
        platform_store_from_url(settings.gateway.platform_url, pool_size=settings.gateway.platform_pool_size)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)

    run_server("gateway", create_app, settings, settings.gateway.port, banner=banner(settings))
