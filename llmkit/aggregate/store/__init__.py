"""Event stores by URL: sqlite:///path.db and clickhouse://host:9000/db, through one explicit table."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmkit.core.backends import parse_backend_url

if TYPE_CHECKING:
    from llmkit.aggregate.store.base import EventStore
    from llmkit.settings import Settings

# scheme -> "module:factory"; imported only when chosen, so SQLite users never load clickhouse-driver.
STORES = {
    "sqlite": "llmkit.aggregate.store.sqlite:sqlite_store_from_url",
    "clickhouse": "llmkit.aggregate.store.clickhouse:clickhouse_store_from_url",
}


def store_from_settings(settings: Settings) -> EventStore:
    """The (not yet opened) event store `aggregate.store` names; an unknown scheme is a ConfigError."""
    url = settings.aggregate.store
    parse_backend_url(url, "aggregate.store", STORES)
    scheme = url.split(":", 1)[0].lower()
    module, _, name = STORES[scheme].partition(":")
    factory = getattr(importlib.import_module(module), name)
    store: EventStore = factory(url, settings)
    return store
