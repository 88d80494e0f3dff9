"""Platform stores by URL: sqlite:///path.db (one process) and postgresql://... (replicas), one table."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmkit.core.sqlite import sqlite_path
from llmkit.errors import ConfigError

if TYPE_CHECKING:
    from llmkit.platform.store.base import PlatformStore


def _sqlite(url: str, pool_size: int) -> PlatformStore:
    from llmkit.platform.store.sqlite import SqlitePlatformStore

    return SqlitePlatformStore(sqlite_path(url, "gateway.platform_url"))


def _postgres(url: str, pool_size: int) -> PlatformStore:
    module = importlib.import_module("llmkit.platform.store.postgres")
    store: PlatformStore = module.PostgresPlatformStore(url, pool_size=pool_size)
    return store


# scheme -> factory; backend modules (and asyncpg) are imported only when their scheme is chosen.
STORES: dict[str, Callable[[str, int], PlatformStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def platform_store_from_url(
    url: str, *, pool_size: int = 10, setting: str = "gateway.platform_url"
) -> PlatformStore:
    """The (not yet opened) store `url` names; another scheme is a ConfigError naming `setting` and the
    supported ones."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    factory = STORES.get(scheme)
    if factory is None:
        raise ConfigError(
            f"{setting} {url!r}: unsupported database; use sqlite:///path.db or "
            "postgresql://user:password@host:5432/db"
        )
    return factory(url, pool_size)
