from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from tests.postgres import PostgresServer

pytestmark = pytest.mark.postgres


async def test_postgres_url_connects_with_asyncpg(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE probe (id integer PRIMARY KEY, name text NOT NULL)")
        await conn.executemany("INSERT INTO probe VALUES ($1, $2)", [(1, "a"), (2, "b")])
        assert await conn.fetchval("SELECT sum(id) FROM probe") == 3
        assert await conn.fetchval("SELECT current_database()") == postgres_url.rsplit("/", 1)[1]
        assert int(await conn.fetchval("SHOW server_version_num")) >= 150000
        assert await conn.fetchval("SHOW fsync") == "off"
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(postgres_server: PostgresServer, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_server.url_for(database, password="not-the-password"))


async def test_the_server_uses_scram_over_tcp_on_loopback_only(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        rules = await conn.fetch("SELECT type, auth_method FROM pg_hba_file_rules")
        assert {rule["auth_method"] for rule in rules} == {"scram-sha-256"}
    finally:
        await conn.close()


async def test_two_postgres_urls_are_separate_databases(
    postgres_url: str, postgres_database_factory: Callable[[], Awaitable[str]]
) -> None:
    other_url = await postgres_database_factory()
    assert other_url != postgres_url
    first, second = await asyncpg.connect(postgres_url), await asyncpg.connect(other_url)
    try:
        await first.execute("CREATE TABLE only_here (id integer)")
        assert await first.fetchval("SELECT to_regclass('only_here') IS NOT NULL")
        assert await second.fetchval("SELECT to_regclass('only_here') IS NULL")
    finally:
        await first.close()
        await second.close()


async def test_made_databases_are_dropped_after_the_test(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.url)
    try:
        # Every earlier test in this module made one or two; none may outlive its test.
        left = await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname LIKE 't\\_%'")
    finally:
        await conn.close()
    assert left == 0
