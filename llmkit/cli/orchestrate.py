"""`llmkit orchestrate`: the async inference job server, and `submit` / `status` to use it from a shell."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    TELEMETRY_ENV,
    HostOpt,
    JsonOpt,
    PortOpt,
    ProfileOpt,
    WorkersOpt,
    fail,
    seed_env_flags,
    settings_or_exit,
)

if TYPE_CHECKING:
    from llmkit.settings import Settings

app = typer.Typer(
    help=(
        "Asynchronous inference jobs: submit, status, long-poll result, WebSocket; priorities, rate limits,\n"
        "a result cache and coalescing of identical prompts.\n\n"
        "Rate limits count per session_id (per API key when the caller sends one) and per client address "
        "(--rate-limit-by both), so a caller cannot escape them by inventing session ids; the address is "
        "the TCP peer (a proxy in front counts as one client).\n\n"
        "Bound beyond loopback it needs orchestrate.admin_key (env LLMKIT_ORCHESTRATE_ADMIN_KEY); with "
        "orchestrate.platform_url (the gateway's store) it accepts the gateway's API keys and each tenant "
        "sees only its own jobs.\n\n"
        "Examples:\n\n"
        "  llmkit orchestrate --port 8090\n\n"
        "  llmkit orchestrate --backend openai --backend-url http://127.0.0.1:4545/v1 --model gpt-4o-mini\n\n"
        '  llmkit orchestrate submit "What is the capital of France?" --priority high --wait\n\n'
        "  llmkit orchestrate status 550e8400-e29b-41d4-a716-446655440000"
    ),
    invoke_without_command=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", "-u", help="The orchestrator's base URL.", show_default="http://127.0.0.1:8090"),
]


def backend_lines(settings: Settings) -> list[str]:
    """Which backend runs the jobs (kind, url, model), and a warning when echo runs only by default."""
    from llmkit.settings import mask_url

    config = settings.orchestrate
    if config.role == "api":
        return ["  role:    api (workers run elsewhere, sharing queue.url)"]
    if config.backend == "echo":
        delay = f", {config.echo_delay_ms:g} ms per word" if config.echo_delay_ms else ""
        described = f"echo (answers each prompt with itself, no model server{delay})"
    else:
        model = config.model or "none by default: each job must name one (orchestrate.model)"
        described = f"{config.backend} at {mask_url(config.backend_url)}, model {model}"
    lines = [f"  role:    {config.role}; {config.concurrency} workers", f"  backend: {described}"]
    origin = settings.origins.get("orchestrate.backend", "default")
    # The shipped default profile spells out the built-in default: echo from it was not chosen either.
    if config.backend == "echo" and (origin == "default" or origin.endswith(f"{os.sep}default.yml")):
        lines.append(
            "  warning: no backend given, so echo answers every job with its prompt; for a model run "
            "--backend openai --backend-url http://127.0.0.1:4545/v1 --model NAME (or --backend ollama)"
        )
    return lines


def banner(settings: Settings) -> Any:
    """What runs the jobs, and a request to paste."""

    from llmkit.settings import mask_url

    def lines(url: str) -> list[str]:
        return [
            *backend_lines(settings),
            f"  queue:   {mask_url(settings.queue.url)} (capacity {settings.queue.capacity})",
            f"  try:     curl {url}/api/v1/infer -H 'Content-Type: application/json' "
            """-d '{"prompt": "Hello", "metadata": {"priority": "high"}}'""",
        ]

    return lines


@app.callback()
def orchestrate(
    ctx: typer.Context,
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    profile: ProfileOpt = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="all (API and workers), api or worker; api/worker share a redis queue."),
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="echo, openai or ollama.")] = None,
    backend_url: Annotated[
        str | None, typer.Option("--backend-url", help="OpenAI-compatible base URL, or the Ollama server.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="The model jobs use unless they name one (openai, ollama).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Jobs run at once per process.")
    ] = None,
    queue_url: Annotated[
        str | None, typer.Option("--queue-url", help="memory:// or redis://HOST:6379/0 (shared by workers).")
    ] = None,
    rate_limit_by: Annotated[
        str | None,
        typer.Option(
            "--rate-limit-by",
            help="Rate limit buckets a submit must pass: session (its session_id), client (the peer address; "
            "X-Forwarded-For is not trusted) or both (default: invented session ids do not bypass it).",
        ),
    ] = None,
) -> None:
    """Serve the job API (POST /api/v1/infer, GET /api/v1/status|result/{id}, WS /api/v1/stream).

    Example: llmkit orchestrate --port 8090 --backend echo
    """
    if ctx.invoked_subcommand is not None:
        return
    flags = {
        "server.host": (host, "flag --host"),
        "server.workers": (workers, "flag --workers"),
        "orchestrate.port": (port, "flag --port"),
        "orchestrate.role": (role, "flag --role"),
        "orchestrate.backend": (backend, "flag --backend"),
        "orchestrate.backend_url": (backend_url, "flag --backend-url"),
        "orchestrate.model": (model, "flag --model"),
        "orchestrate.concurrency": (concurrency, "flag --concurrency"),
        "queue.url": (queue_url, "flag --queue-url"),
        "orchestrate.rate_limit_by": (rate_limit_by, "flag --rate-limit-by"),
    }
    settings = settings_or_exit(profile, {**flags, **seed_env_flags(TELEMETRY_ENV, os.environ, flags)})
    from llmkit.cli.serving import run_server
    from llmkit.core.auth import refuse_open_bind
    from llmkit.errors import ConfigError
    from llmkit.orchestrate.app import create_app

    try:
        # Beyond loopback anyone could read every job: only with an admin credential that sees them all.
        refuse_open_bind(
            settings.server.host,
            bool(settings.orchestrate.admin_key),
            "orchestrate.admin_key",
            "LLMKIT_ORCHESTRATE_ADMIN_KEY",
        )
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)

    run_server("orchestrate", create_app, settings, settings.orchestrate.port, banner=banner(settings))


def _base(url: str | None) -> str:
    return (url or os.environ.get("LLMKIT_ORCHESTRATE_URL") or "http://127.0.0.1:8090").rstrip("/")


# The variable `submit` and `status` read an API key from, for an orchestrator that requires one.
API_KEY_ENV = "LLMKIT_API_KEY"


def _call(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One HTTP call with a clear one-line failure when the server cannot be reached."""
    import asyncio

    import aiohttp

    # The caller's API key, from the environment only (a flag would show in `ps`).
    key = os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else None

    async def go() -> tuple[int, dict[str, Any]]:
        client_timeout = aiohttp.ClientTimeout(total=timeout + 10)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            async with session.request(method, url, json=body, headers=headers) as response:
                data = await response.json(content_type=None)
                return response.status, data if isinstance(data, dict) else {"data": data}

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}: {exc} (is `llmkit orchestrate` running there?)")


def _show(job: dict[str, Any], json_output: bool) -> None:
    import json

    if json_output:
        typer.echo(json.dumps(job, indent=2))
    elif job.get("status") == "completed":
        typer.echo(job.get("result") or "")
    else:
        typer.echo(f"{job.get('request_id')}  {job.get('status')}  {job.get('error') or ''}".rstrip())


def _error_exit(status: int, data: dict[str, Any]) -> None:
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    fail(f"HTTP {status}: {message or data}")


@app.command()
def submit(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    url: UrlOpt = None,
    priority: Annotated[str, typer.Option("--priority", help="critical, high, normal or low.")] = "normal",
    session: Annotated[str | None, typer.Option("--session", help="Session id (rate limits).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the result and print it.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait with --wait.")] = 60.0,
    json_output: JsonOpt = False,
) -> None:
    """Submit a job; prints its request id, or with --wait its result (exit 1 if it did not complete).

    An orchestrator that requires API keys gets the one in LLMKIT_API_KEY (Authorization: Bearer).

    Example: llmkit orchestrate submit "Summarize this" --priority high --wait

    Example: LLMKIT_API_KEY=llk_... llmkit orchestrate submit "Summarize this" --url http://10.0.0.5:8090
    """
    base = _base(url)
    body: dict[str, Any] = {"prompt": prompt, "metadata": {"priority": priority}}
    if session is not None:
        body["session_id"] = session
    status, job = _call("POST", f"{base}/api/v1/infer", body)
    if status != 200:
        _error_exit(status, job)
    if wait and job.get("status") not in ("completed", "failed", "timeout", "cancelled"):
        wait_url = f"{base}/api/v1/result/{job['request_id']}?timeout={timeout:g}"
        status, job = _call("GET", wait_url, timeout=timeout)
        if status not in (200, 408):
            _error_exit(status, job)
    if not wait and not json_output:
        typer.echo(job["request_id"])
        return
    _show(job, json_output)
    if job.get("status") != "completed":
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="The request_id submit printed.")],
    url: UrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print a job's state (its result once completed); exit 1 for an unknown id.

    Example: llmkit orchestrate status 550e8400-e29b-41d4-a716-446655440000 --json
    """
    code, job = _call("GET", f"{_base(url)}/api/v1/status/{request_id}")
    if code != 200:
        _error_exit(code, job)
    _show(job, json_output)
