"""One contract for every platform store: tenants, keys, revocation, migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmkit.errors import ConfigError
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import ApiKey, PlatformStore, SchemaTooNew, StoreConflict, Tenant
from llmkit.platform.store.migrations import LATEST


@pytest.fixture(params=["sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[PlatformStore]:
    s = platform_store_from_url(store_url)
    await s.open()
    yield s
    await s.close()


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


def test_an_unsupported_database_names_what_is_supported() -> None:
    with pytest.raises(ConfigError, match="sqlite:///path.db or postgresql://"):
        platform_store_from_url("mysql://h/db")
    with pytest.raises(ConfigError, match="name the file"):
        platform_store_from_url("sqlite://")
