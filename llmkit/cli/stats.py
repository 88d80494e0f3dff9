"""`llmkit stats URL...`: watch running llmkit servers through their /health, /stats and /metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.cli.common import EXIT_FAILURE, EXIT_USAGE, JsonOpt, ProfileOpt, settings_or_exit

if TYPE_CHECKING:
    import aiohttp
    from rich.table import Table

    from llmkit.settings import Settings

# A table cell, not a dump: the first numbers of /stats tell whether the server is healthy.
MAX_NUMBERS = 12
REQUESTS_METRIC = "llmkit_http_requests_total"


def normalize_url(url: str) -> str:
    """`127.0.0.1:4545/` -> `http://127.0.0.1:4545`."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def flatten_numbers(data: Any, prefix: str = "") -> Iterator[tuple[str, float | int]]:
    """Numeric leaves of nested /stats JSON as ("cache.hits", 3) pairs."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flatten_numbers(value, f"{prefix}{key}.")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield prefix.rstrip("."), data


def requests_total(metrics_text: str) -> float | None:
    """The sum of llmkit_http_requests_total over every label set, or None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        samples = [s for f in text_string_to_metric_families(metrics_text) for s in f.samples]
    except ValueError:
        return None
    found = [s.value for s in samples if s.name == REQUESTS_METRIC]
    if not found:
        return None
    total = sum(found)
    return int(total) if float(total).is_integer() else total


def format_uptime(seconds: float | None) -> str:
    """3723.4 -> `1h 02m 03s`."""
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _describe(exc: BaseException, url: str, timeout: float) -> str:
    import aiohttp

    if isinstance(exc, TimeoutError):
        return f"no answer from {url} within {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return f"cannot connect to {exc.host}:{exc.port}: {os.strerror(errno) if errno else exc.os_error}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"GET {url} answered HTTP {exc.status}"
    if isinstance(exc, ValueError):
        return f"GET {url} did not answer JSON"
    return f"GET {url} failed: {exc}"


async def _get(session: aiohttp.ClientSession, url: str, as_json: bool) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json(content_type=None) if as_json else await response.text()


async def _get_health(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of GET /health: a 503 still says why it is down."""
    async with session.get(url) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            if 200 <= response.status < 300:
                raise
            body = None
        return response.status, body


def _health_problem(code: int, body: Any) -> str | None:
    """Why a /health answer means down (None when it means up): any 2xx is up, whatever words it uses."""
    if 200 <= code < 300:
        return None
    status = body.get("status") if isinstance(body, dict) else None
    return f"/health answered HTTP {code}" + (f" (status {status!r})" if status is not None else "")


async def fetch_server(session: aiohttp.ClientSession, url: str, timeout: float) -> dict[str, Any]:
    """One server's snapshot: {url, up, health, stats, requests_total, error}."""
    import asyncio

    health, stats_body, metrics = await asyncio.gather(
        _get_health(session, url + "/health"),
        _get(session, url + "/stats", True),
        _get(session, url + "/metrics", False),
        return_exceptions=True,
    )
    result: dict[str, Any] = {"url": url, "up": False, "health": None, "stats": None}
    result["requests_total"], result["error"] = None, None
    if isinstance(health, BaseException):
        result["error"] = _describe(health, url + "/health", timeout)
        return result
    code, result["health"] = health
    problem = _health_problem(code, result["health"])
    result["up"] = problem is None
    problems = [problem] if problem else []
    if isinstance(stats_body, BaseException):
        problems.append(_describe(stats_body, url + "/stats", timeout))
    else:
        result["stats"] = stats_body
    if isinstance(metrics, BaseException):
        problems.append(_describe(metrics, url + "/metrics", timeout))
    else:
        result["requests_total"] = requests_total(metrics)
    result["error"] = "; ".join(problems) or None
    return result


async def snapshot(session: aiohttp.ClientSession, urls: list[str], timeout: float) -> list[dict[str, Any]]:
    """Every server's snapshot, fetched concurrently."""
    import asyncio

    return list(await asyncio.gather(*(fetch_server(session, url, timeout) for url in urls)))


def cluster_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for replicas of one service: how many are up, and the sums of their numbers."""
    from llmkit.core.figures import summable  # not at import time: `llmkit --help` loads no llmkit.core

    sums: dict[str, float | int] = {}
    for row in results:
        if row["up"]:
            for name, value in flatten_numbers(row["stats"] or {}):
                if summable(name):
                    sums[name] = sums.get(name, 0) + value
    totals = [row["requests_total"] for row in results if row["up"] and row["requests_total"] is not None]
    up = sum(row["up"] for row in results)
    down = [row["url"] for row in results if not row["up"]]
    return {
        "url": f"cluster of {len(results)}",
        "up": up > 0,
        "replicas_up": up,
        "replicas": len(results),
        "health": {"status": "ok" if not down else "degraded" if up else "down"},
        "stats": sums,
        "requests_total": sum(totals) if totals else None,
        "error": f"down: {', '.join(down)}" if down else None,
    }


def _numbers(row: dict[str, Any]) -> list[str]:
    """The numbers of a server's /stats as `key=value` strings (its pid left out)."""
    return [f"{k}={v:g}" for k, v in flatten_numbers(row["stats"] or {}) if k != "pid"]


def with_cluster(results: list[dict[str, Any]], cluster: bool) -> list[dict[str, Any]]:
    """The rows to show: with `cluster`, the sums of every replica first."""
    return [cluster_row(results), *results] if cluster else results


def render_table(results: list[dict[str, Any]], caption: str | None = None) -> Table:
    """A rich table, one row per server; down servers in red."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="llmkit servers", caption=caption, expand=False)
    for column in ("server", "status", "uptime", "requests"):
        table.add_column(column, no_wrap=True, justify="right" if column == "requests" else "left")
    table.add_column("stats", min_width=20)
    for row in results:
        health = row["health"] if isinstance(row["health"], dict) else {}
        numbers = _numbers(row)
        if len(numbers) > MAX_NUMBERS:
            numbers = [*numbers[:MAX_NUMBERS], f"... {len(numbers) - MAX_NUMBERS} more"]
        details = "\n".join(escape(n) for n in numbers)
        if row["error"]:
            details = "\n".join(filter(None, [f"[red]{escape(row['error'])}[/red]", details]))
        total = row["requests_total"]
        who = " ".join(str(health[k]) for k in ("service", "version") if k in health)
        if "replicas" in row:  # the cluster's own row
            who = f"{row['replicas_up']} of {row['replicas']} up, numbers summed"
        elif "haproxy" in row:
            who = f"{who} · HAProxy: {row['haproxy']}".lstrip(" ·")
        table.add_row(
            escape(row["url"]) + (f"\n[dim]{escape(who)}[/dim]" if who else ""),
            _state(row),
            format_uptime(health.get("uptime")),
            "-" if total is None else f"{total:,.0f}",
            details or "-",
        )
    return table


def _state(row: dict[str, Any]) -> str:
    if "replicas" in row and row["up"] and row["replicas_up"] < row["replicas"]:
        return "[yellow]degraded[/yellow]"
    return "[green]up[/green]" if row["up"] else "[bold red]down[/bold red]"


def render_lines(results: list[dict[str, Any]], clock: str) -> list[str]:
    """One plain line per server, for a pipe or a log file: every number, nothing cut off."""
    lines = []
    for row in results:
        health = row["health"] if isinstance(row["health"], dict) else {}
        total = row["requests_total"]
        parts = [clock, row["url"], "up" if row["up"] else "down"]
        parts += [f"{k}={health[k]}" for k in ("service", "version") if k in health]
        parts += [f"haproxy={row['haproxy']}"] if "haproxy" in row else []
        parts += [
            f"uptime={format_uptime(health.get('uptime'))}",
            f"requests={'-' if total is None else total}",
        ]
        parts += _numbers(row)
        if row["error"]:
            parts.append(f"error={row['error']!r}")
        lines.append(" ".join(parts))
    return lines


async def behind_haproxy(
    session: aiohttp.ClientSession, stats_url: str, timeout: float
) -> list[dict[str, Any]]:
    """Every backend of an HAProxy stats page: a row of its servers' sums, then each server's row with
    HAProxy's status for it (`haproxy`) and its backend."""
    from llmkit.core.haproxy_stats import balanced_servers, csv_url

    try:
        text = await _get(session, csv_url(stats_url), False)
    except Exception as exc:
        raise StatsSourceError(_describe(exc, csv_url(stats_url), timeout)) from exc
    groups: dict[str, list[Any]] = {}
    for server in balanced_servers(text):
        groups.setdefault(server.backend, []).append(server)
    rows: list[dict[str, Any]] = []
    for backend, servers in groups.items():
        replicas = await snapshot(session, [server.url for server in servers], timeout)
        for row, server in zip(replicas, servers, strict=True):
            row.update(backend=backend, haproxy=server.status)
        head = cluster_row(replicas)
        head.update(url=f"{backend} (cluster of {len(replicas)})", backend=backend)
        rows += [head, *replicas]
    return rows


class StatsSourceError(Exception):
    """The HAProxy stats page could not be read."""


async def collect(
    session: aiohttp.ClientSession, urls: list[str], timeout: float, cluster: bool, haproxy: str | None
) -> list[dict[str, Any]]:
    """The rows to show: the URLs' (with a cluster row first), or every backend of an HAProxy page."""
    if haproxy is not None:
        return await behind_haproxy(session, haproxy, timeout)
    return with_cluster(await snapshot(session, urls, timeout), cluster)


async def _once(
    urls: list[str], timeout: float, cluster: bool = False, haproxy: str | None = None
) -> list[dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return await collect(session, urls, timeout, cluster, haproxy)


async def _watch(
    urls: list[str], interval: float, timeout: float, cluster: bool = False, haproxy: str | None = None
) -> None:
    import asyncio
    import sys

    import aiohttp
    from rich.console import Console
    from rich.live import Live

    console = Console()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        if not console.is_terminal:
            # A live view redraws in place, which a pipe cannot show: one snapshot per interval instead.
            while True:
                results = await collect(session, urls, timeout, cluster, haproxy)
                sys.stdout.write("\n".join(render_lines(results, time.strftime("%H:%M:%S"))) + "\n")
                sys.stdout.flush()
                await asyncio.sleep(interval)
        with Live(console=console, auto_refresh=False) as live:
            while True:
                results = await collect(session, urls, timeout, cluster, haproxy)
                caption = f"{time.strftime('%H:%M:%S')} · every {interval:g}s · Ctrl-C to stop"
                if haproxy is not None:
                    caption += f" · HAProxy: {haproxy}"
                live.update(render_table(results, caption), refresh=True)
                await asyncio.sleep(interval)


def profile_urls(settings: Settings) -> list[str]:
    """The base URL of every server a profile configures (a section with a `port`)."""
    from llmkit.settings import SECTIONS

    host = settings.server.host
    # A wildcard bind address is reachable on loopback from this machine.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    # dict.fromkeys: one row per address, even when two systems are configured on the same port.
    urls = dict.fromkeys(
        f"http://{host}:{getattr(settings, name).port}"
        for name in SECTIONS
        if hasattr(getattr(settings, name), "port")
    )
    return list(urls)


def stats(
    urls: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[URL]...",
            help="Base URLs of llmkit servers, e.g. http://127.0.0.1:4545; default: the profile's servers.",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.1, help="Seconds between refreshes of the live view.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit; exit code 1 if a server is down.")
    ] = False,
    json_output: JsonOpt = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each server's answer.")
    ] = 3.0,
    profile: ProfileOpt = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="The URLs are replicas of one service: first a row of their sums and how many are up.",
        ),
    ] = False,
    haproxy: Annotated[
        str | None,
        typer.Option(
            "--haproxy",
            metavar="STATS_URL",
            help="Find the replicas on an HAProxy stats page: each backend's sums, then its servers.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Watch running llmkit servers: status, uptime, requests and the numbers from /stats.

    Reads GET /health, /stats and /metrics of every URL and refreshes a live table until Ctrl-C; a
    server is up when /health answers any 2xx. Piped (stdout not a terminal), it prints one plain line
    per server every interval instead.

    --once prints one snapshot and exits with code 1 when a server is down.

    --json (implies --once) prints a JSON list of {url, up, health, stats, requests_total, error}.

    --cluster takes the URLs as replicas of one service (behind one load balancer): the first row sums
    their counts (ratios, percentiles and means are not summed; each replica's row has them) and says
    how many are up; with --json it is the list's first item, with replicas_up and replicas.

    --haproxy STATS_URL reads HAProxy's stats page (its CSV export) for the servers of every backend and
    shows each backend as a cluster: its sums, then each server with HAProxy's status for it.

    Without URLs it watches the servers the profile configures (each system's host and port).

    Examples:

      llmkit stats http://127.0.0.1:4545 http://127.0.0.1:8080

      llmkit stats 127.0.0.1:4545 --once

      llmkit stats http://127.0.0.1:4545 --once --json --timeout 1

      llmkit stats --profile local --once

      llmkit stats --cluster http://127.0.0.1:8081 http://127.0.0.1:8082 http://127.0.0.1:8083

      llmkit stats --haproxy http://127.0.0.1:8404/stats --once
    """
    import asyncio

    from llmkit.cli.common import fail

    if haproxy is not None and urls:
        fail(
            "give either URLs or --haproxy (it finds the URLs on HAProxy's stats page), not both", EXIT_USAGE
        )
    stats_page = normalize_url(haproxy) if haproxy is not None else None
    targets = (
        [] if stats_page else [normalize_url(url) for url in urls or profile_urls(settings_or_exit(profile))]
    )
    try:
        if not (once or json_output):
            try:
                asyncio.run(_watch(targets, interval, timeout, cluster, stats_page))
            except KeyboardInterrupt:
                pass
            return
        results = asyncio.run(_once(targets, timeout, cluster, stats_page))
    except StatsSourceError as exc:
        fail(f"cannot read HAProxy's stats page: {exc}", code=EXIT_FAILURE)
    if json_output:
        import orjson

        typer.echo(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        from llmkit.cli.common import console

        caption = f"HAProxy: {stats_page}" if stats_page else None
        console().print(render_table(results, caption))
    if not all(row["up"] for row in results if "replicas" not in row):
        raise typer.Exit(EXIT_FAILURE)
