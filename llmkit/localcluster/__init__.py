"""The HA topology (HAProxy, Redis with Sentinel, PostgreSQL, ClickHouse, replicas) as local processes."""
