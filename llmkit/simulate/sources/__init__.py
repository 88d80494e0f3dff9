"""Answer sources for `llmkit simulate`: markdown files (after the question-answer set) or ClickHouse."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.core.clickhouse import ClickHouseConfig, clickhouse_config
from llmkit.errors import ConfigError
from llmkit.simulate.sources.base import Source, SourceUnavailable
from llmkit.simulate.sources.clickhouse import ClickHouseSource, init_db
from llmkit.simulate.sources.file import FileSource, resolve_responses_dir
from llmkit.simulate.sources.matching import Matcher, words
from llmkit.simulate.sources.qa import QaSource, load_qa, resolve_qa_path
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
    "QaSource",
    "QaRow",
    "Source",
    "SourceUnavailable",
    "clickhouse_config",
    "init_db",
    "load_qa",
    "read_qa_jsonl",
    "resolve_qa_path",
    "resolve_responses_dir",
    "source_from_settings",
    "words",
]

SOURCES = ("file", "database")


def source_from_settings(settings: Settings, cache: Cache) -> Source:
    """The source `settings.simulate.source` names, built on `cache` (not started yet): the file source
    behind the question-answer set of simulate.qa_path unless simulate.qa_enabled is off."""
    sim = settings.simulate
    kind = sim.source
    if kind == "file":
        directory, _ = resolve_responses_dir(sim.responses_dir)
        files = FileSource(directory, cache, settings.cache.ttl)
        if not sim.qa_enabled:
            return files
        # Read now, not in start(): a bad file is a configuration error (exit 2) before anything listens.
        path = resolve_qa_path(sim.qa_path)
        return QaSource(load_qa(path), files, threshold=sim.qa_threshold, path=str(path))
    if kind == "database":
        ch = settings.clickhouse
        return ClickHouseSource(
            clickhouse_config(ch.url, ch.username, ch.password), cache, settings.cache.ttl
        )
    raise ConfigError(f"simulate.source must be one of {', '.join(SOURCES)}; got {kind!r}")
