"""`llmkit gateway keys|tenants`: issue, list and revoke API keys; create, list and change tenants.

Two targets: a running gateway through its admin API (`--url`, with an admin key), or by default the
platform store itself (`--store`, default gateway.platform_url), with the same checks as the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from llmkit.cli.common import EXIT_FAILURE, EXIT_USAGE, JsonOpt, ProfileOpt, console, fail
from llmkit.platform.quota_types import Quotas

if TYPE_CHECKING:
    from llmkit.platform.admin.operations import StoreAdmin

keys = typer.Typer(
    help=(
        "Issue, list and revoke the gateway's API keys (in its platform store, or through --url).\n\n"
        "Example: KEY=$(llmkit gateway keys create --name my-app --scope chat)"
    ),
    no_args_is_help=True,
)
tenants = typer.Typer(
    help=(
        "Create, list and change the gateway's tenants and their quotas.\n\n"
        "Example: llmkit gateway tenants create --name Acme --id acme --rpm 60 --tpm 100000"
    ),
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running gateway (http://HOST:PORT): act through its admin API instead of the store.",
        show_default=False,
    ),
]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-key",
        envvar="LLMKIT_GATEWAY_ADMIN_KEY",
        help="With --url: the gateway's admin key (or an API key with the admin scope).",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The platform store to act on: sqlite:///path.db or postgresql://user:pw@host:5432/db.",
        show_default="gateway.platform_url",
    ),
]
QUOTAS = ("rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens")


def _quota_opt(name: str, what: str) -> Any:
    flag = "--" + name.replace("_", "-")
    return typer.Option(flag, help=f"{what}: an integer >= 1, or none for no limit.", show_default=False)


RpmOpt = Annotated[str | None, _quota_opt("rpm", "Requests per minute")]
TpmOpt = Annotated[str | None, _quota_opt("tpm", "Tokens per minute")]
ConcurrentOpt = Annotated[str | None, _quota_opt("max_concurrent", "Requests in flight at once")]
DailyOpt = Annotated[str | None, _quota_opt("daily_tokens", "Tokens per day (UTC)")]
MonthlyOpt = Annotated[str | None, _quota_opt("monthly_tokens", "Tokens per month (UTC)")]


@dataclass(frozen=True)
class Target:
    """Where the commands act: a gateway's admin API (url, admin key) or a store (url, pepper, pool)."""

    url: str
    admin_key: str = ""
    pepper: str = ""
    pool_size: int = 1

    @property
    def remote(self) -> bool:
        return self.url.startswith(("http://", "https://"))


def _target(url: str | None, admin_key: str | None, store: str | None, profile: str | None) -> Target:
    """--url (with its admin key) or the store: --store, else the settings' gateway.platform_url."""
    if url is not None:
        if store is not None:
            fail("give --url (a running gateway) or --store (its database), not both", EXIT_USAGE)
        if not url.startswith(("http://", "https://")):
            fail(f"--url must be a gateway's http:// or https:// address; got {url!r}", EXIT_USAGE)
        if not admin_key:
            fail("--url needs the gateway's admin key: --admin-key or LLMKIT_GATEWAY_ADMIN_KEY", EXIT_USAGE)
        return Target(url.rstrip("/"), admin_key=admin_key)
    from llmkit.cli.common import settings_or_exit

    settings = settings_or_exit(profile, {"gateway.platform_url": (store, "flag --store")})
    gw = settings.gateway
    return Target(gw.platform_url, pepper=gw.key_pepper)


def _api_error_exit(status: int, message: str, prefix: str = "") -> NoReturn:
    # Not found and server failures are the work failing (1); the rest is input or credentials (2).
    code = EXIT_FAILURE if status == 404 or status >= 500 else EXIT_USAGE
    fail(f"{prefix}{message}", code)


def _http(target: Target, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One admin API call; an error answer exits with its message (1 or 2), an unreachable gateway with 1."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"X-API-Key": target.admin_key, "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{target.url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            error = json.loads(raw).get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace").strip()[:300]
        _api_error_exit(exc.code, message or exc.reason, prefix=f"HTTP {exc.code}: ")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach the gateway at {target.url}: {reason} (is `llmkit gateway` running there?)")


def _in_store(target: Target, work: Callable[[StoreAdmin], Any]) -> dict[str, Any]:
    """Open the store, run `work` on it, close it; API errors and store failures exit with a message."""
    import asyncio

    from llmkit.core.http import ApiError
    from llmkit.errors import BackendError, ConfigError
    from llmkit.platform.admin.operations import StoreAdmin
    from llmkit.platform.store import platform_store_from_url

    async def main() -> dict[str, Any]:
        store = platform_store_from_url(target.url, pool_size=target.pool_size)
        await store.open()
        try:
            answer: dict[str, Any] = await work(StoreAdmin(store, pepper=target.pepper))
            return answer
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        _api_error_exit(exc.status, exc.message)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    except BackendError as exc:
        fail(str(exc))


def _admin(
    target: Target, method: str, path: str, work: Callable[[StoreAdmin], Any], body: Any = None
) -> dict[str, Any]:
    """One admin operation: `method path` on a running gateway, or `work` on the store directly."""
    if target.remote:
        return _http(target, method, path, body)
    return _in_store(target, work)


def _segment(text: str) -> str:
    """`text` as one path segment of an admin URL."""
    from urllib.parse import quote

    return quote(text, safe="")


def _print_json(body: Any) -> None:
    import json

    typer.echo(json.dumps(body, indent=2))


def _when(iso: str | None) -> str:
    """`2026-12-01T10:00:00.123Z` -> `2026-12-01 10:00:00`; None -> `-`."""
    return iso[:19].replace("T", " ") if iso else "-"


# -- keys ------------------------------------------------------------------------------------------------


@keys.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="What the key is for (shown in lists).")],
    description: Annotated[str | None, typer.Option("--description", help="A longer note.")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant the key belongs to.", show_default="none")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="chat, search or admin; repeat for several.", show_default="chat"),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="When it stops working: 2027-01-01T00:00:00Z.", show_default="never"),
    ] = None,
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue an API key and print it once: only the key on stdout, the rest on stderr.

    Examples:

      KEY=$(llmkit gateway keys create --name my-app --scope chat --scope search)

      llmkit gateway keys create --name acme-ci --tenant acme --expires 2027-01-01T00:00:00Z --json

      llmkit gateway keys create --name app --url http://127.0.0.1:8080 --admin-key "$ADMIN_KEY"
    """
    target = _target(url, admin_key, store, profile)
    body: dict[str, Any] = {"name": name, "scopes": scope or ["chat"]}
    for field, value in (("description", description), ("tenant_id", tenant), ("expires_at", expires)):
        if value is not None:
            body[field] = value
    made = _admin(target, "POST", "/api/admin/api-keys", lambda admin: admin.create_key(body), body)
    if as_json:
        _print_json(made)
        return
    err = console(stderr=True)
    err.print(
        f"[bold]API key {made['id']}[/bold] ({made['name']}, scopes {', '.join(made['scopes'])}, "
        f"tenant {made['tenant_id'] or 'none'})",
        highlight=False,
    )
    err.print("[yellow]It is shown only now: store it somewhere safe. Lost, it can only be revoked.[/yellow]")
    typer.echo(made["key"])


@keys.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys (never their secrets): id, name, tenant, scopes, status, created, last used.

    Example: llmkit gateway keys list --tenant acme --json
    """
    target = _target(url, admin_key, store, profile)
    from urllib.parse import urlencode

    query = f"?{urlencode({'tenant_id': tenant})}" if tenant is not None else ""
    listed = _admin(target, "GET", f"/api/admin/api-keys{query}", lambda admin: admin.list_keys(tenant))
    if as_json:
        _print_json(listed)
        return
    from rich.table import Table

    table = Table("id", "name", "tenant", "scopes", "status", "created", "last used", "expires")
    for key in listed["keys"]:
        table.add_row(
            key["id"],
            key["name"],
            key["tenant_id"] or "-",
            ",".join(key["scopes"]),
            key["status"],
            _when(key["created_at"]),
            _when(key["last_used_at"]),
            _when(key["expires_at"]),
        )
    console().print(table)


@keys.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after llk_; `keys list` shows it).")],
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: a running gateway refuses it within a second; exit 1 for an unknown id.

    Example: llmkit gateway keys revoke 3f9a0c1d2e4b
    """
    target = _target(url, admin_key, store, profile)
    path = f"/api/admin/api-keys/{_segment(key_id)}"
    revoked = _admin(target, "DELETE", path, lambda admin: admin.revoke_key(key_id))
    if as_json:
        _print_json(revoked)
        return
    typer.echo(f"revoked API key {revoked['id']} ({revoked['name']}) at {_when(revoked['revoked_at'])}")


# -- tenants ---------------------------------------------------------------------------------------------


# The quota flags' names, in the order _quotas takes them.
QUOTA_NAMES = tuple(f.name for f in dataclasses.fields(Quotas))


def _quotas(*flags: str | None, clear: bool) -> dict[str, int | None]:
    """The quota flags (rpm, tpm, max_concurrent, daily_tokens, monthly_tokens, in Quotas' order) -> the
    body's quotas: integers as numbers, `none` as null (only with `clear`)."""
    quotas: dict[str, int | None] = {}
    for name, text in zip(QUOTA_NAMES, flags, strict=True):
        if text is None:
            continue
        if text.strip().lower() == "none":
            if clear:
                quotas[name] = None
            continue
        try:
            quotas[name] = int(text)
        except ValueError:
            flag = "--" + name.replace("_", "-")
            fail(f"{flag} (quotas.{name}): must be an integer >= 1 or none; got {text!r}", EXIT_USAGE)
    return quotas


def _print_tenants(items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("id", "name", *(q.replace("_", " ") for q in QUOTAS), "created", "updated")
    for tenant in items:
        limits = [str(tenant["quotas"][q]) if tenant["quotas"][q] is not None else "-" for q in QUOTAS]
        table.add_row(
            tenant["id"], tenant["name"], *limits, _when(tenant["created_at"]), _when(tenant["updated_at"])
        )
    console().print(table)


@tenants.command("create")
def create_tenant(
    name: Annotated[str, typer.Option("--name", help="The tenant's name (unique).")],
    tenant_id: Annotated[
        str | None, typer.Option("--id", help="Its id (letters, digits, _ . -).", show_default="t_<random>")
    ] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_concurrent: ConcurrentOpt = None,
    daily_tokens: DailyOpt = None,
    monthly_tokens: MonthlyOpt = None,
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant with its quotas (those not given: no limit).

    Examples:

      llmkit gateway tenants create --name Acme --id acme --rpm 60 --tpm 100000

      llmkit gateway tenants create --name Beta --daily-tokens 1000000 --json
    """
    target = _target(url, admin_key, store, profile)
    body: dict[str, Any] = {
        "name": name,
        "quotas": _quotas(rpm, tpm, max_concurrent, daily_tokens, monthly_tokens, clear=False),
    }
    if tenant_id is not None:
        body["id"] = tenant_id
    made = _admin(target, "POST", "/api/admin/tenants", lambda admin: admin.create_tenant(body), body)
    if as_json:
        _print_json(made)
        return
    _print_tenants([made])


@tenants.command("list")
def list_tenants(
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tenants with their quotas.

    Example: llmkit gateway tenants list --store sqlite:///./data/platform.db --json
    """
    target = _target(url, admin_key, store, profile)
    listed = _admin(target, "GET", "/api/admin/tenants", lambda admin: admin.list_tenants())
    if as_json:
        _print_json(listed)
        return
    _print_tenants(listed["tenants"])


@tenants.command("set")
def set_tenant(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id (`tenants list` shows it).")],
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_concurrent: ConcurrentOpt = None,
    daily_tokens: DailyOpt = None,
    monthly_tokens: MonthlyOpt = None,
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    store: StoreOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a tenant or change some quotas: only those given change; none removes a limit.

    Example: llmkit gateway tenants set acme --rpm 120 --tpm none
    """
    target = _target(url, admin_key, store, profile)
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    quotas = _quotas(rpm, tpm, max_concurrent, daily_tokens, monthly_tokens, clear=True)
    if quotas:
        body["quotas"] = quotas
    path = f"/api/admin/tenants/{_segment(tenant_id)}"
    changed = _admin(target, "PATCH", path, lambda admin: admin.update_tenant(tenant_id, body), body)
    if as_json:
        _print_json(changed)
        return
    _print_tenants([changed])
