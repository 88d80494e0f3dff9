"""One contract for every platform store: tenants, keys, revocation, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from llmkit.errors import BackendError, ConfigError
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import ApiKey, PlatformStore, SchemaTooNew, StoreConflict, Tenant
from llmkit.platform.store.migrations import LATEST
from llmkit.platform.store.postgres import PostgresPlatformStore
from tests.postgres import PostgresServer


def tenant(tid: str = "t1", name: str = "Acme", **quotas: int | None) -> Tenant:
    return Tenant(id=tid, name=name, quotas=Quotas(**quotas), created_at=100.0, updated_at=100.0)


def key(kid: str = "k1", tenant_id: str | None = "t1", created: float = 200.0, **kw: object) -> ApiKey:
    return ApiKey(
        id=kid,
        secret_hash="ab" * 32,
        name=f"key {kid}",
        description="for tests",
        tenant_id=tenant_id,
        scopes=("chat", "search"),
        created_at=created,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_fresh_store_is_at_the_latest_schema(store: PlatformStore) -> None:
    assert await store.schema_version() == LATEST
    await store.ping()


async def test_opening_twice_migrates_once(store_url: str, store: PlatformStore) -> None:
    again = platform_store_from_url(store_url)
    await again.open()
    try:
        assert await again.schema_version() == LATEST
    finally:
        await again.close()


async def test_tenants_round_trip_with_their_quotas(store: PlatformStore) -> None:
    await store.add_tenant(tenant(rpm=60, tpm=None, max_concurrent=2, daily_tokens=10**12))
    await store.add_tenant(tenant("t2", "Beta"))
    got = await store.tenant("t1")
    assert got == tenant(rpm=60, max_concurrent=2, daily_tokens=10**12)
    assert [t.id for t in await store.tenants()] == ["t1", "t2"]
    assert await store.tenant("nope") is None


async def test_a_taken_tenant_id_or_name_is_a_conflict(store: PlatformStore) -> None:
    await store.add_tenant(tenant())
    with pytest.raises(StoreConflict):
        await store.add_tenant(tenant("t1", "Other"))
    with pytest.raises(StoreConflict, match="name"):
        await store.add_tenant(tenant("t2", "Acme"))


async def test_update_tenant_replaces_name_and_quotas(store: PlatformStore) -> None:
    await store.add_tenant(tenant(rpm=1))
    await store.add_tenant(tenant("t2", "Beta"))
    changed = Tenant("t1", "Acme 2", Quotas(tpm=500), created_at=100.0, updated_at=150.0)
    assert await store.update_tenant(changed) is True
    assert await store.tenant("t1") == changed
    assert await store.update_tenant(tenant("missing", "X")) is False
    with pytest.raises(StoreConflict):
        await store.update_tenant(Tenant("t1", "Beta", Quotas(), 100.0, 160.0))


async def test_deleting_a_tenant_revokes_its_keys_only(store: PlatformStore) -> None:
    await store.add_tenant(tenant())
    await store.add_tenant(tenant("t2", "Beta"))
    await store.add_key(key("k1"))
    await store.add_key(key("k2", created=201.0))
    await store.add_key(key("k3", tenant_id="t2", created=202.0))
    assert await store.delete_tenant("t1", at=300.0) == 2
    assert await store.tenant("t1") is None
    assert [(k.id, k.revoked_at) for k in await store.keys()] == [("k1", 300.0), ("k2", 300.0), ("k3", None)]
    assert await store.delete_tenant("t1", at=301.0) is None


async def test_keys_round_trip_and_list_by_tenant(store: PlatformStore) -> None:
    await store.add_key(key("k1", expires_at=999.5))
    await store.add_key(key("k2", tenant_id=None, created=201.0))
    got = await store.key("k1")
    assert got == key("k1", expires_at=999.5)
    assert got is not None and got.scopes == ("chat", "search")
    assert [k.id for k in await store.keys()] == ["k1", "k2"]
    assert [k.id for k in await store.keys("t1")] == ["k1"]
    assert await store.key("nope") is None
    with pytest.raises(StoreConflict):
        await store.add_key(key("k1"))


async def test_revoking_keeps_the_first_time(store: PlatformStore) -> None:
    await store.add_key(key())
    revoked = await store.revoke_key("k1", at=500.0)
    assert revoked is not None and revoked.revoked_at == 500.0
    again = await store.revoke_key("k1", at=600.0)
    assert again is not None and again.revoked_at == 500.0
    assert await store.revoke_key("nope", at=1.0) is None


async def test_touch_never_moves_last_used_back(store: PlatformStore) -> None:
    await store.add_key(key("k1"))
    await store.add_key(key("k2", created=201.0))
    await store.touch_keys({"k1": 700.0, "k2": 710.0, "gone": 1.0})
    await store.touch_keys({"k1": 650.0})
    assert [k.last_used_at for k in await store.keys()] == [700.0, 710.0]


async def test_a_sqlite_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/platform.db"
    first = platform_store_from_url(url)
    await first.open()
    await first.close()
    with sqlite3.connect(tmp_path / "platform.db") as conn:
        conn.execute("INSERT INTO llmkit_schema (version) VALUES (?)", (LATEST + 1,))
    newer = platform_store_from_url(url)
    with pytest.raises(SchemaTooNew, match="upgrade llmkit"):
        await newer.open()
    await newer.close()


@pytest.mark.postgres
async def test_a_postgres_schema_newer_than_the_code_is_refused(postgres_url: str) -> None:
    first = platform_store_from_url(postgres_url)
    await first.open()
    await first.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("INSERT INTO llmkit_schema (version) VALUES ($1)", LATEST + 1)
    finally:
        await conn.close()
    newer = platform_store_from_url(postgres_url)
    with pytest.raises(SchemaTooNew, match="upgrade llmkit"):
        await newer.open()
    await newer.close()


@pytest.mark.postgres
async def test_stores_migrating_one_fresh_postgres_database_together_all_succeed(postgres_url: str) -> None:
    # Replicas starting at once: without the advisory lock, concurrent CREATE TABLE IF NOT EXISTS collide.
    stores = [platform_store_from_url(postgres_url, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert [await s.schema_version() for s in stores] == [LATEST] * len(stores)
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    conn = await asyncpg.connect(postgres_url)
    try:
        # Each version recorded once: the later stores found nothing pending.
        assert await conn.fetchval("SELECT count(*) FROM llmkit_schema") == LATEST
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_postgres_errors_are_backend_errors_without_the_password(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    wrong = platform_store_from_url(postgres_server.url_for(database, password="s3cret-wrong"))
    with pytest.raises(BackendError, match="password authentication failed") as refused:
        await wrong.open()
    assert "s3cret-wrong" not in str(refused.value) and "****" in str(refused.value)
    assert "s3cret-wrong" not in repr(wrong)
    gone = PostgresPlatformStore(postgres_server.url_for("no_such_database"), pool_size=1)
    with pytest.raises(BackendError) as missing:
        await gone.open()
    assert postgres_server.password not in str(missing.value)
    closed = platform_store_from_url(postgres_url)
    with pytest.raises(BackendError, match="not open"):
        await closed.ping()


@pytest.mark.postgres
async def test_the_postgres_pool_has_the_size_asked_for(postgres_url: str) -> None:
    store = PostgresPlatformStore(postgres_url, pool_size=3)
    await store.open()
    try:
        assert store._pool is not None and store._pool.get_max_size() == 3
        # More callers than connections wait their turn rather than fail.
        await asyncio.gather(*(store.ping() for _ in range(12)))
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="at least 1"):
        PostgresPlatformStore(postgres_url, pool_size=0)


def test_an_unsupported_database_names_what_is_supported() -> None:
    with pytest.raises(ConfigError, match="sqlite:///path.db or postgresql://"):
        platform_store_from_url("mysql://h/db")
    with pytest.raises(ConfigError, match="name the file"):
        platform_store_from_url("sqlite://")


def test_processes_opening_one_fresh_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Gateway workers (--workers N) open the same file at once: WAL switch and migration must wait."""
    url = f"sqlite:///{tmp_path}/shared.db"
    code = (
        "import asyncio, sys\n"
        "from llmkit.platform.store import platform_store_from_url\n"
        "from llmkit.platform.analytics import analytics_store_from_url\n"
        "async def main():\n"
        "    for s in (platform_store_from_url(sys.argv[1]), analytics_store_from_url(sys.argv[1])):\n"
        "        await s.open()\n"
        "        await s.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    with sqlite3.connect(tmp_path / "shared.db") as conn:
        assert conn.execute("SELECT count(*), max(version) FROM llmkit_schema").fetchone() == (LATEST, LATEST)
