"""Query analytics by URL: sqlite:///path.db, postgresql://user:pw@host/db, clickhouse://host:9000/db."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmkit.core.backends import parse_backend_url

if TYPE_CHECKING:
    from llmkit.platform.analytics.base import AnalyticsStore

# scheme -> "module:factory"; imported only when chosen, so SQLite users load neither asyncpg nor
# clickhouse-driver.
STORES = {
    "sqlite": "llmkit.platform.analytics.sqlite:sqlite_analytics_from_url",
    "postgresql": "llmkit.platform.analytics.postgres:postgres_analytics_from_url",
    "postgres": "llmkit.platform.analytics.postgres:postgres_analytics_from_url",
    "clickhouse": "llmkit.platform.analytics.clickhouse:clickhouse_analytics_from_url",
}


def analytics_store_from_url(url: str, *, pool_size: int = 10) -> AnalyticsStore:
    """The (not yet opened) analytics store `url` names; an unknown scheme is a ConfigError listing them."""
    scheme = parse_backend_url(url, "analytics store", STORES).scheme
    module, _, name = STORES[scheme].partition(":")
    factory = getattr(importlib.import_module(module), name)
    store: AnalyticsStore = factory(url, pool_size=pool_size)
    return store
