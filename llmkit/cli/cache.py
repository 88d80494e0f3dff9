"""`llmkit cache`: inspect, read, clear and warm the shared Redis cache."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from llmkit.cli.common import EXIT_USAGE, JsonOpt, ProfileOpt, fail, settings_or_exit
from llmkit.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from llmkit.core.cache import RedisCache
    from llmkit.settings import Settings

T = TypeVar("T")


def mask_url(url: str) -> str:
    """`url` with its secrets masked (settings load only when a command runs: `llmkit --help` stays fast)."""
    from llmkit.settings import mask_url as masked

    return masked(url)


# The simulator's key names and list TTL (seed 000): {prefix}:file:{filename} and {prefix}:file_list.
FILE_KEY = "file:{name}"
FILE_LIST_KEY = "file_list"
FILE_LIST_TTL = 600.0

app = typer.Typer(
    help=(
        "Operate the shared Redis cache: stats, keys, get, clear, warm.\n\n"
        "Example: llmkit cache stats --url redis://127.0.0.1:6379/0?prefix=llmkit"
    ),
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Cache URL: redis://, rediss:// or tiered+redis:// (its Redis part is used).",
        show_default="the profile's cache.url",
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", help="Key prefix of the cache.", show_default="the URL's prefix, else llmkit"),
]


def _resolve_url(url: str | None, profile: str | None, settings: Settings | None = None) -> str:
    """The URL to use: --url, else the profile's cache.url; a memory:// URL stops with exit code 2."""
    if url is None:
        url = (settings or settings_or_exit(profile)).cache.url
    if url.partition("://")[0].lower() == "memory":
        hint = "pass --url redis://HOST:6379/0 or --profile local"
        fail(f"the cache CLI needs a Redis URL ({hint}); got {mask_url(url)}", EXIT_USAGE)
    return url


def _run(url: str, prefix: str | None, work: Callable[[RedisCache], Awaitable[T]]) -> T:
    """Open the Redis cache of `url`, run `work` on it, close it; errors become one line and an exit code."""
    from llmkit.core.cache import redis_cache_from_url

    async def main() -> T:
        cache = redis_cache_from_url(url, prefix=prefix)
        try:
            return await work(cache)
        finally:
            await cache.close()

    import asyncio

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    except BackendError as exc:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split()) or type(cause).__name__
        unreachable = (RedisConnectionError, RedisTimeoutError, OSError)
        lead = "cannot reach Redis at" if isinstance(cause, unreachable) else "Redis command failed at"
        fail(f"{lead} {mask_url(url)}: {reason}")


def _keys(count: int) -> str:
    return f"{count} key" if count == 1 else f"{count} keys"


@app.command("stats")
def stats(
    url: UrlOpt = None, prefix: PrefixOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Keys per prefix segment, TTL summary and Redis memory used.

    Example: llmkit cache stats --url redis://127.0.0.1:6379/0 --prefix llmkit --json
    """
    target = _resolve_url(url, profile)

    async def collect(cache: RedisCache) -> dict[str, Any]:
        segments: dict[str, int] = {}
        ttls: list[float] = []
        no_ttl = 0
        async for page in cache.scan():
            keys = [cache.relative_key(raw) for raw in page]
            for key in keys:
                segment = key.partition(":")[0]
                segments[segment] = segments.get(segment, 0) + 1
            for ttl in (await cache.ttls(keys)).values():
                if ttl is None:
                    no_ttl += 1
                else:
                    ttls.append(ttl)
        server = await cache.server_stats()
        ttls.sort()
        return {
            "url": mask_url(target),
            "prefix": cache.prefix,
            "keys": sum(segments.values()),
            "segments": dict(sorted(segments.items(), key=lambda item: (-item[1], item[0]))),
            "ttl": {
                "no_ttl": no_ttl,
                "min": ttls[0] if ttls else None,
                "median": ttls[len(ttls) // 2] if ttls else None,
                "max": ttls[-1] if ttls else None,
            },
            "memory": {"used_bytes": server["bytes"], "used_human": server["bytes_human"]},
            "db_keys": server["db_keys"],
        }

    report = _run(target, prefix, collect)
    if as_json:
        import orjson

        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    _print_stats(report)


def _print_stats(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("segment", style="cyan")
    table.add_column("keys", justify="right")
    for segment, count in report["segments"].items():
        table.add_row(segment, str(count))
    table.add_row("total", str(report["keys"]), style="bold")
    console = Console(highlight=False)
    # A header line rather than a table title, which rich would wrap to the (narrow) table width.
    console.print(f"llmkit cache {report['prefix']}:* at {report['url']}", markup=False)
    console.print(table)
    ttl = report["ttl"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    console.print(
        f"TTL: no TTL {ttl['no_ttl']} · min {seconds(ttl['min'])} · median {seconds(ttl['median'])} · "
        f"max {seconds(ttl['max'])}"
    )
    memory = report["memory"]["used_human"]
    console.print(f"Redis memory used: {memory} (whole server; {report['db_keys']} keys in this db)")


@app.command("keys")
def keys(
    pattern: Annotated[str, typer.Argument(help="Glob on the key after the prefix.")] = "*",
    limit: Annotated[int, typer.Option("--limit", min=1, help="Print at most this many keys.")] = 100,
    url: UrlOpt = None,
    prefix: PrefixOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List keys (without the prefix) matching PATTERN, using SCAN (never KEYS).

    Example: llmkit cache keys 'file:*' --limit 20 --url redis://127.0.0.1:6379/0
    """
    target = _resolve_url(url, profile)

    async def scan(cache: RedisCache) -> list[str]:
        # One more than the limit tells whether the listing was cut.
        return await cache.keys(pattern, limit=limit + 1)

    found = _run(target, prefix, scan)
    for key in sorted(found[:limit]):
        typer.echo(key)
    if len(found) > limit:
        typer.echo(f"llmkit: showing the first {limit} keys; pass --limit to see more", err=True)


@app.command("get")
def get(
    key: Annotated[str, typer.Argument(help="Key, with or without the `PREFIX:` part.")],
    url: UrlOpt = None,
    prefix: PrefixOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Print the value of KEY; a missing key exits with code 1.

    Example: llmkit cache get file:hello.md --url redis://127.0.0.1:6379/0
    """
    target = _resolve_url(url, profile)

    async def read(cache: RedisCache) -> tuple[str, bytes | None]:
        # Accept the full Redis key too, as `keys` in redis-cli shows it.
        name = key.removeprefix(f"{cache.prefix}:") if cache.prefix else key
        return cache.full_key(name), await cache.get(name)

    full_key, value = _run(target, prefix, read)
    if value is None:
        fail(f"no key {full_key} at {mask_url(target)}")
    typer.echo(value, nl=not value.endswith(b"\n"))


@app.command("clear")
def clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    only: Annotated[
        str, typer.Option("--only", help="Only keys whose name after the prefix starts with this.")
    ] = "",
    url: UrlOpt = None,
    prefix: PrefixOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Delete every key under the prefix (SCAN + UNLINK in batches); asks first unless --yes.

    Example: llmkit cache clear --prefix llmkit --yes --url redis://127.0.0.1:6379/0
    """
    target = _resolve_url(url, profile)

    async def count(cache: RedisCache) -> tuple[str, int]:
        from llmkit.core.cache.redis import escape_glob

        return cache.full_key(only) + "*", await cache.count(escape_glob(only) + "*")

    pattern, found = _run(target, prefix, count)
    where = f"{pattern} at {mask_url(target)}"
    if found == 0:
        typer.echo(f"no keys match {where}; nothing to delete")
        return
    if not yes:
        try:
            confirmed = typer.confirm(f"Delete {_keys(found)} matching {where}?", default=False)
        except typer.Abort:  # no stdin (EOF) or Ctrl-C: end the prompt line, then refuse
            typer.echo("")
            confirmed = False
        if not confirmed:
            fail("not confirmed; nothing deleted (pass --yes to delete without asking)")

    async def remove(cache: RedisCache) -> int:
        return await cache.clear(only)

    typer.echo(f"deleted {_keys(_run(target, prefix, remove))} matching {where}")


@app.command("warm")
def warm(
    from_dir: Annotated[Path, typer.Option("--from", help="Directory of markdown (*.md) answers.")],
    url: UrlOpt = None,
    prefix: PrefixOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Load DIR/*.md as the simulator caches them: PREFIX:file:NAME (TTL cache.ttl), PREFIX:file_list (600 s).

    Example: llmkit cache warm --from ./zresponse --profile local
    """
    settings = settings_or_exit(profile)
    target = _resolve_url(url, profile, settings)
    if not from_dir.is_dir():
        fail(f"--from {from_dir}: not a directory", EXIT_USAGE)
    files = sorted(path for path in from_dir.glob("*.md") if path.is_file())
    if not files:
        fail(f"no *.md files in {from_dir}; nothing warmed")
    try:
        items = [(FILE_KEY.format(name=path.name), path.read_bytes(), settings.cache.ttl) for path in files]
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    import orjson

    items.append((FILE_LIST_KEY, orjson.dumps([path.name for path in files]), FILE_LIST_TTL))

    async def load(cache: RedisCache) -> str:
        await cache.set_many(items)
        return cache.prefix

    used_prefix = _run(target, prefix, load)
    ttl = f"{settings.cache.ttl:g}s" if settings.cache.ttl else "no TTL"
    typer.echo(
        f"warmed {len(files)} files from {from_dir} into {used_prefix}:file:* ({ttl}) and "
        f"{used_prefix}:{FILE_LIST_KEY} ({FILE_LIST_TTL:g}s) at {mask_url(target)}"
    )
