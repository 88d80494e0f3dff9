from __future__ import annotations

from clickhouse_driver import Client

from tests.servers import ClickHouseServer


def test_clickhouse_answers_through_clickhouse_driver(clickhouse_server: ClickHouseServer) -> None:
    client = Client("127.0.0.1", port=clickhouse_server.tcp_port)
    try:
        client.execute("CREATE TABLE IF NOT EXISTS fixture_probe (id UInt32, name String) ENGINE = Memory")
        client.execute("INSERT INTO fixture_probe (id, name) VALUES", [(1, "a"), (2, "b")])
        assert client.execute("SELECT count(), sum(id) FROM fixture_probe") == [(2, 3)]
        (version,) = client.execute("SELECT version()")[0]
        assert version.split(".")[0].isdigit()
    finally:
        client.execute("DROP TABLE IF EXISTS fixture_probe")
        client.disconnect()
