"""`llmkit simulate`: the OpenAI-compatible LLM simulator, and `llmkit simulate init-db`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import (
    EXIT_USAGE,
    TELEMETRY_ENV,
    HostOpt,
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
        "A fake OpenAI-compatible LLM endpoint: SSE streaming, answers from a question-answer set and "
        "markdown files, or ClickHouse.\n\n"
        "Examples:\n\n"
        "  llmkit simulate --port 4545\n\n"
        "  llmkit simulate --config config.yml   (the seed simulator's own config layout)\n\n"
        "  llmkit simulate --qa-path my_questions.jsonl   (your questions first; --no-qa: markdown only)\n\n"
        "  llmkit simulate --ttft-ms 300 --itl-ms 20 --jitter 0.2 --workers 2\n\n"
        "  llmkit simulate --rpm 60 --tpm 40000   (429 past the limits, x-ratelimit-* headers on answers)\n\n"
        "  llmkit simulate --max-num-seqs 8 --time-factor-under-load 2   (vLLM-like queueing)\n\n"
        "  llmkit simulate --fault-429 0.05 --fault-503 0.02   (5% of requests get 429, 2% get 503)\n\n"
        "  LLMKIT_SIMULATE_ADMIN_KEY=... llmkit simulate --host 0.0.0.0   (/admin/* then needs that key)\n\n"
        "  llmkit simulate init-db --load questions.jsonl --profile ha"
    ),
    invoke_without_command=True,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The seed simulator's config.yml (binding, source, database, redis...), read after the profile.",
        exists=False,
    ),
]


def _settings(profile: str | None, config: Path | None, flags: dict[str, Any]) -> Settings:
    """The profile, then the seed's config.yml (when given), then env and flags."""
    layers = None
    if config is not None:
        from llmkit.simulate.seed_config import seed_config_layer

        layers = lambda: [seed_config_layer(config)]  # noqa: E731 - read inside the ConfigError guard
    return settings_or_exit(profile, {**flags, **seed_env_flags(TELEMETRY_ENV, os.environ, flags)}, layers)


def banner(settings: Settings) -> Any:
    """The lines a person needs after start-up: what answers, from where, and a request to paste."""
    from llmkit.settings import mask_url

    sim = settings.simulate
    if sim.source == "file":
        from llmkit.simulate.sources.file import resolve_responses_dir

        directory, shipped = resolve_responses_dir(sim.responses_dir)
        note = ""
        if shipped:
            note = f" (the answers shipped with llmkit; {sim.responses_dir} does not exist here)"
        source = f"markdown files in {directory.resolve()}{note}"
    else:
        source = f"ClickHouse {mask_url(settings.clickhouse.url)}"
    qa: list[str] = []
    if sim.source == "file" and sim.qa_enabled:
        where = "the set shipped with llmkit" if sim.qa_path == "" else sim.qa_path
        qa = [f"  qa:     questions from {where} first (threshold {sim.qa_threshold:g}; --no-qa: off)"]

    def lines(url: str) -> list[str]:
        message = '[{"role": "user", "content": "Hello!"}]'
        body = f'{{"model": "{sim.model}", "messages": {message}, "stream": true}}'
        return [
            *qa,
            f"  source: {source}",
            f"  cache:  {mask_url(settings.cache.url)} (ttl {settings.cache.ttl:g}s)",
            f"  try:    curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'",
        ]

    return lines


@app.callback()
def simulate(
    ctx: typer.Context,
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Where answers come from: file or database.")
    ] = None,
    responses_dir: Annotated[
        str | None, typer.Option("--responses-dir", help="Folder of markdown answers (source file).")
    ] = None,
    qa: Annotated[
        bool | None,
        typer.Option(
            "--qa/--no-qa", help="Answer the questions of simulate.qa_path before the markdown files."
        ),
    ] = None,
    qa_path: Annotated[
        str | None,
        typer.Option("--qa-path", help="A .jsonl file of {pertanyaan, jawaban} rows or a folder of them."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for the choice of unmatched answers (0: random).")
    ] = None,
    ttft_ms: Annotated[
        float | None, typer.Option("--ttft-ms", min=0, help="Time to first token, ms.")
    ] = None,
    itl_ms: Annotated[float | None, typer.Option("--itl-ms", min=0, help="Inter-token latency, ms.")] = None,
    jitter: Annotated[
        float | None,
        typer.Option("--jitter", min=0, max=1, help="Scale each delay by a random factor in [1-J, 1+J]."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="The default model id, listed first by GET /v1/models.")
    ] = None,
    rpm: Annotated[
        int | None,
        typer.Option(
            "--rpm", min=0, help="Requests per minute per model (429 past it, x-ratelimit-* headers)."
        ),
    ] = None,
    tpm: Annotated[
        int | None,
        typer.Option(
            "--tpm", min=0, help="Tokens per minute per model (429 past it, x-ratelimit-* headers)."
        ),
    ] = None,
    fault_429: Annotated[
        float | None, typer.Option("--fault-429", min=0, max=1, help="Share of requests answered 429.")
    ] = None,
    fault_500: Annotated[
        float | None, typer.Option("--fault-500", min=0, max=1, help="Share of requests answered 500.")
    ] = None,
    fault_503: Annotated[
        float | None, typer.Option("--fault-503", min=0, max=1, help="Share of requests answered 503.")
    ] = None,
    fault_timeout: Annotated[
        float | None,
        typer.Option("--fault-timeout", min=0, max=1, help="Share that hang fault_timeout_s, then 504."),
    ] = None,
    fault_disconnect: Annotated[
        float | None,
        typer.Option("--fault-disconnect", min=0, max=1, help="Share whose connection drops mid-answer."),
    ] = None,
    answer_mode: Annotated[
        str | None,
        typer.Option(
            "--answer-mode", help="match (default), echo, random or lorem: which answer a prompt gets."
        ),
    ] = None,
    output_tokens: Annotated[
        str | None,
        typer.Option("--output-tokens", help='"MEAN,STDEV": answer lengths for requests without max_tokens.'),
    ] = None,
    max_num_seqs: Annotated[
        int | None,
        typer.Option("--max-num-seqs", min=0, help="Requests that run at once; the rest wait (0: no limit)."),
    ] = None,
    max_waiting: Annotated[
        int | None,
        typer.Option(
            "--max-waiting", min=0, help="Requests that may wait for a seat; 429 past it (0: no limit)."
        ),
    ] = None,
    time_factor_under_load: Annotated[
        float | None,
        typer.Option(
            "--time-factor-under-load",
            min=1,
            help="TTFT and ITL multiplier with max-num-seqs requests running.",
        ),
    ] = None,
    cache_url: Annotated[
        str | None, typer.Option("--cache-url", help="Cache URL: memory://, redis://HOST:6379/0?prefix=P...")
    ] = None,
) -> None:
    """Serve an OpenAI-compatible fake LLM (POST /v1/chat/completions, /test_completion, GET /v1/models).

    Example: llmkit simulate --port 4545 --profile local
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"profile": profile, "config": config}
        return
    flags = {
        "server.host": (host, "flag --host"),
        "server.workers": (workers, "flag --workers"),
        "simulate.port": (port, "flag --port"),
        "simulate.source": (source, "flag --source"),
        "simulate.responses_dir": (responses_dir, "flag --responses-dir"),
        "simulate.qa_enabled": (qa, "flag --qa/--no-qa"),
        "simulate.qa_path": (qa_path, "flag --qa-path"),
        "simulate.seed": (seed, "flag --seed"),
        "simulate.ttft_ms": (ttft_ms, "flag --ttft-ms"),
        "simulate.itl_ms": (itl_ms, "flag --itl-ms"),
        "simulate.jitter": (jitter, "flag --jitter"),
        "simulate.model": (model, "flag --model"),
        "simulate.rpm": (rpm, "flag --rpm"),
        "simulate.tpm": (tpm, "flag --tpm"),
        "simulate.fault_rate_429": (fault_429, "flag --fault-429"),
        "simulate.fault_rate_500": (fault_500, "flag --fault-500"),
        "simulate.fault_rate_503": (fault_503, "flag --fault-503"),
        "simulate.fault_rate_timeout": (fault_timeout, "flag --fault-timeout"),
        "simulate.fault_rate_disconnect": (fault_disconnect, "flag --fault-disconnect"),
        "simulate.answer_mode": (answer_mode, "flag --answer-mode"),
        "simulate.output_tokens": (output_tokens, "flag --output-tokens"),
        "simulate.max_num_seqs": (max_num_seqs, "flag --max-num-seqs"),
        "simulate.max_waiting": (max_waiting, "flag --max-waiting"),
        "simulate.time_factor_under_load": (time_factor_under_load, "flag --time-factor-under-load"),
        "cache.url": (cache_url, "flag --cache-url"),
    }
    settings = _settings(profile, config, flags)
    from llmkit.cli.serving import run_server
    from llmkit.errors import ConfigError
    from llmkit.simulate.app import create_app, refuse_open_admin

    try:
        # /admin/* reschedules every client's faults: beyond loopback only behind simulate.admin_key.
        refuse_open_admin(settings)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    run_server("simulate", create_app, settings, settings.simulate.port, banner=banner(settings))


@app.command("init-db")
def init_db(
    ctx: typer.Context,
    load: Annotated[
        Path | None,
        typer.Option("--load", help="JSONL rows {pertanyaan, jawaban, referensi?, qa_id?} to insert."),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Load the sample questions shipped with llmkit.")
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="ClickHouse URL (default: the profile's clickhouse.url).")
    ] = None,
    profile: ProfileOpt = None,
) -> None:
    """Create the ClickHouse table response_simulator and load answer rows into it.

    Example: llmkit simulate init-db --url clickhouse://127.0.0.1:9000/default --sample
    """
    import asyncio

    from llmkit.errors import BackendError, ConfigError
    from llmkit.simulate.sources.clickhouse import SAMPLE_FILE
    from llmkit.simulate.sources.clickhouse import init_db as create_table

    parent = ctx.obj or {}
    settings = _settings(profile or parent.get("profile"), parent.get("config"), {"clickhouse.url": url})
    if load is not None and sample:
        fail("pass either --load FILE or --sample, not both", 2)
    rows_file = SAMPLE_FILE if sample else load
    ch = settings.clickhouse
    try:
        inserted = asyncio.run(create_table(ch.url, ch.username, ch.password, rows_file))
    except ConfigError as exc:
        fail(f"configuration error: {exc}", 2)
    except BackendError as exc:
        fail(str(exc))
    what = f"; inserted {inserted} rows from {rows_file}" if rows_file else ""
    typer.echo(f"table response_simulator ready at {ch.url}{what}")
