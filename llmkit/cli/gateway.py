"""`llmkit gateway`: the chatbot backend in front of upstream model servers (Ollama or OpenAI-compatible)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import (
    HostOpt,
    PortOpt,
    ProfileOpt,
    SeedEnv,
    WorkersOpt,
    llmkit_env_name,
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


# The seed's variables, honoured where its deployments set them; LLMKIT_* variables and flags win.
# LOG_LEVEL before RUST_LOG (the seed's own): where both are set, the first wins.
SEED_ENV: SeedEnv = {
    "HOST": ("server.host", parse_text),
    "PORT": ("gateway.port", parse_port),
    "OLLAMA_API_URL": ("gateway.upstreams", parse_text),
    "CACHE_MAX_SIZE_MB": ("gateway.cache_max_size_mb", parse_number),
    "LOG_LEVEL": ("server.log_level", env_logger_level),
    "RUST_LOG": ("server.log_level", env_logger_level),
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
    return settings_or_exit(profile, merged, _config_layers(config, env), env=env)


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
    The seed's config.toml (--config, or CONFIG_PATH) works as in the seed,
    and so do HOST, PORT, OLLAMA_API_URL, CACHE_MAX_SIZE_MB and LOG_LEVEL (or RUST_LOG);
    LLMKIT_* variables and flags win over them.

    Examples:

      llmkit gateway --config config.toml

      OLLAMA_API_URL=http://127.0.0.1:11434 llmkit gateway

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
    from llmkit.gateway.app import create_app

    run_server("gateway", create_app, settings, settings.gateway.port, banner=banner(settings))
