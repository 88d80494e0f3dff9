"""`llmkit publish`: the aggregator's stress publisher, with retries, a progress bar and --verify."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import EXIT_FAILURE, EXIT_USAGE, JsonOpt, fail

if TYPE_CHECKING:
    from rich.table import Table

    from llmkit.aggregate.publisher import OnBatch, Report

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "8000"


def default_url(env: Mapping[str, str]) -> str:
    """The seed publisher's target: AGGREGATOR_HOST and AGGREGATOR_PORT, else http://127.0.0.1:8000."""
    host = env.get("AGGREGATOR_HOST") or DEFAULT_HOST
    port = env.get("AGGREGATOR_PORT") or DEFAULT_PORT
    return f"http://{host}:{port}"


def base_url(url: str) -> str:
    """`127.0.0.1:8000/publish` -> `http://127.0.0.1:8000` (the routes are added to it)."""
    url = url.strip().rstrip("/")
    url = url if "://" in url else f"http://{url}"
    return url.removesuffix("/publish")


@contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[OnBatch | None]:
    """A rich progress bar of acknowledged events on stderr; yields the engine's per-batch callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("acknowledged", total=total)
        failed = 0

        def on_batch(size: int, ok: bool) -> None:
            nonlocal failed
            if ok:
                progress.advance(task, size)
            else:
                failed += size
                progress.update(task, description=f"acknowledged ([red]{failed} failed[/red])")

        yield on_batch


def _counter_rows(result: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    stats = result["stats"]
    if stats["delta"] is None:
        yield "/stats", "[yellow]no received/unique_processed/duplicated_dropped counters[/yellow]"
        return
    for name, grew in stats["delta"].items():
        yield f"/stats {name}", f"+{grew:,}  ({stats['before'][name]:,} -> {stats['after'][name]:,})"


def render_table(result: Mapping[str, Any]) -> Table:
    """The run's numbers, one row each."""
    from rich.markup import escape
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    r, lat, server = result, result["latency_ms"], result["server"]
    share = r["duplicates_sent"] / r["events"]
    topics = f"{len(r['topics'])} topic" + ("s" if len(r["topics"]) > 1 else "")
    queued = f" ({r['queued_batches']:,} batches queued: 202)" if r["queued_batches"] else ""
    not_sent = f"; {r['not_sent']:,} not sent" if r["not_sent"] else ""
    attempts = ", ".join(f"{status} x{n}" for status, n in r["attempts"].items())
    latency = f"{ms(lat['p50'])} / {ms(lat['p95'])} / {ms(lat['p99'])} ms (max {ms(lat['max'])})"
    answers = "-" if server["accepted"] is None else f"accepted {server['accepted']:,}"
    rows = [
        ("target", escape(r["url"])),
        ("events", f"{r['events']:,} in {r['batches']:,} batches, {topics}"),
        ("duplicates sent", f"{r['duplicates_sent']:,} ({share:.1%}); {r['distinct_sent']:,} distinct"),
        ("acknowledged", f"{r['acknowledged']:,}{queued}"),
        ("failed", f"{r['failed']:,} events in {r['failed_batches']:,} batches{not_sent}"),
        ("retries", f"{r['retries']:,} (attempts: {attempts})"),
        ("unknown outcome", f"{r['unknown_outcome_events']:,} events"),
        ("wall time", f"{r['elapsed_s']:.3f} s"),
        ("throughput", f"{r['events_per_s'] or 0:,.0f} events/s acknowledged"),
        ("latency p50/p95/p99", latency),
        ("server answers", answers + (f", duplicates {server['duplicates']:,}" if answers != "-" else "")),
        *_counter_rows(result),
    ]
    verify = result["verify"]
    if verify is not None:
        rows.append(("verify", "[green]ok[/green]" if verify["ok"] else "[bold red]MISMATCH[/bold red]"))
    table = Table(title="llmkit publish", show_header=False)
    table.add_column("metric", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, value)
    return table


def summary_line(result: Mapping[str, Any]) -> str:
    """One line for --quiet."""
    line = (
        f"published {result['acknowledged']:,} of {result['events']:,} events "
        f"({result['duplicates_sent']:,} duplicates) to {result['url']} in {result['elapsed_s']:.2f}s: "
        f"{result['events_per_s'] or 0:,.0f} events/s, {result['failed']:,} failed"
    )
    if result["not_sent"]:
        line += f", {result['not_sent']:,} not sent"
    if result["verify"] is not None:
        line += "; verify " + ("ok" if result["verify"]["ok"] else "MISMATCH")
    return line


def _report_or_exit(plan: Any, options: Any, show_progress: bool) -> Report:
    from llmkit.aggregate.publisher import PublishFailed, run_publish
    from llmkit.core import telemetry

    _start_tracing()
    try:
        with progress_bar(plan.count, show_progress) as on_batch:
            return run_publish(plan, options, on_batch)
    except PublishFailed as exc:
        fail(f"{exc} (is `llmkit aggregate` running there? set --url or AGGREGATOR_HOST/AGGREGATOR_PORT)")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    finally:
        telemetry.shutdown()


def _start_tracing() -> None:
    """Trace each batch (a span per POST, its traceparent to the aggregator) when telemetry is on."""
    import os

    from llmkit import __version__
    from llmkit.cli.common import TELEMETRY_ENV, seed_env_flags, settings_or_exit
    from llmkit.core import telemetry

    if not {"TELEMETRY_ENABLED", "LLMKIT_TELEMETRY_ENABLED", "LLMKIT_PROFILE"} & os.environ.keys():
        return  # a client command reads no settings unless tracing may be asked for
    settings = settings_or_exit(None, seed_env_flags(TELEMETRY_ENV, os.environ, {}))
    telemetry.configure(settings.telemetry, settings.telemetry.service_name or "llmkit-publish", __version__)


def publish(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            "-u",
            help="The aggregator's base URL.",
            show_default="$AGGREGATOR_HOST:$AGGREGATOR_PORT or http://127.0.0.1:8000",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, help="Events to send, duplicates included.")
    ] = 5000,
    duplicates: Annotated[
        float,
        typer.Option(
            "--duplicates", "-d", help="Share of sent events that repeat an earlier one, in [0, 1)."
        ),
    ] = 0.2,
    topics: Annotated[int, typer.Option("--topics", min=1, help="Topics to spread events over.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Events per request.")] = 500,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once.")
    ] = 4,
    rate: Annotated[
        float, typer.Option("--rate", min=0, help="Events per second at most; 0: unlimited.")
    ] = 0.0,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Same ids and choices every run (a rerun sends only duplicates)."),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            "--retries", min=0, help="Retries of a batch on 429, 5xx, timeouts, dropped connections."
        ),
    ] = 5,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds to wait for each answer.")
    ] = 30.0,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Compare the server's /stats deltas with what was sent; exit 1 if off.",
        ),
    ] = False,
    verify_timeout: Annotated[
        float,
        typer.Option(
            "--verify-timeout", min=0, help="Seconds to wait for queued (202) events to reach /stats."
        ),
    ] = 30.0,
    json_output: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; one summary line instead of the table.")
    ] = False,
) -> None:
    """Stress an aggregator: publish events with a share of duplicates, report, verify.

    Batches are built before the clock starts and sent by --concurrency workers.
    429 (after Retry-After), 5xx, timeouts and dropped connections are retried
    with backoff (safe: the aggregator drops duplicates); other 4xx are not.
    The table: acknowledged and failed events, retries, events/s, latency
    p50/p95/p99, and the server's /stats before and after.

    --verify checks the /stats deltas against what was sent and exits 1 on a
    mismatch; other publishers running at the same time make deltas meaningless.

    Exit codes: 0 ok; 1 failed batches, a --verify mismatch or no server; 2 usage.

    Examples:

      llmkit publish --count 5000 --duplicates 0.2 --verify

      llmkit publish --url http://127.0.0.1:8000 --count 100000 --batch-size 1000 --concurrency 4

      llmkit publish --topics 3 --rate 2000 --seed 7 --json

      AGGREGATOR_HOST=aggregate AGGREGATOR_PORT=8000 llmkit publish --quiet
    """
    if not 0 <= duplicates < 1:
        fail(f"--duplicates must be in [0, 1) (a share of the sent events); got {duplicates:g}", EXIT_USAGE)
    from llmkit.aggregate.publisher import RunOptions
    from llmkit.aggregate.workload import plan_events

    target = base_url(url or default_url(os.environ))
    plan = plan_events(count, duplicates, topics, batch_size, seed)
    options = RunOptions(
        target, concurrency, rate, retries, timeout, fresh=seed is None, settle_timeout=verify_timeout
    )
    report = _report_or_exit(plan, options, show_progress=not quiet and sys.stderr.isatty())
    result = report.to_dict(verify)
    if json_output:
        import orjson

        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    elif quiet:
        typer.echo(summary_line(result))
    else:
        from rich.console import Console

        Console().print(render_table(result))
    if result["failed"]:
        batches = f"{result['failed_batches']} of {result['batches']} batches ({result['failed']:,} events)"
        typer.echo(f"llmkit: {batches} failed:", err=True)
    for error in result["errors"]:
        typer.echo(f"llmkit: {error}", err=True)
    if result["not_sent"]:
        typer.echo(f"llmkit: stopped early: {result['not_sent']:,} events not sent", err=True)
    problems = result["verify"]["problems"] if verify else []
    for problem in problems:
        typer.echo(f"llmkit: --verify: {problem}", err=True)
    if result["failed"] or result["not_sent"] or problems:
        raise typer.Exit(EXIT_FAILURE)
