"""Answer sources for `llmkit simulate`: markdown files or ClickHouse, chosen by `simulate.source`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.core.clickhouse import ClickHouseConfig, clickhouse_config
from llmkit.errors import ConfigError
from llmkit.simulate.sources.base import Source, SourceUnavailable
from llmkit.simulate.sources.clickhouse import ClickHouseSource, init_db
from llmkit.simulate.sources.file import FileSource, resolve_responses_dir
from llmkit.simulate.sources.matching import Matcher, words
from llmkit.simulate.sources.qa_file import SAMPLE_QA, QaRow, read_qa_jsonl

if TYPE_CHECKING:
    from llmkit.core.cache.base import Cache
    from llmkit.settings import Settings

__all__ = [
    "SAMPLE_QA",
    "SOURCES",
    "ClickHouseConfig",
    "ClickHouseSource",
    "FileSource",
    "Matcher",
    "QaRow",
    "Source",
    "SourceUnavailable",
    "clickhouse_config",
    "init_db",
    "read_qa_jsonl",
    "resolve_responses_dir",
    "source_from_settings",
    "words",
]

SOURCES = ("file", "database")


def source_from_settings(settings: Settings, cache: Cache) -> Source:
    """The source `settings.simulate.source` names, built on `cache` (not started yet)."""
    kind = settings.simulate.source
    if kind == "file":
        directory, _ = resolve_responses_dir(settings.simulate.responses_dir)
        return FileSource(directory, cache, settings.cache.ttl)
    if kind == "database":
        ch = settings.clickhouse
        return ClickHouseSource(
            clickhouse_config(ch.url, ch.username, ch.password), cache, settings.cache.ttl
        )
    raise ConfigError(f"simulate.source must be one of {', '.join(SOURCES)}; got {kind!r}")
