"""Answers from a directory of markdown files, cached as the seed does (`file_list`, `file:{name}`)."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmkit.core.cache.base import Cache
from llmkit.core.memo import Memo
from llmkit.errors import BackendError
from llmkit.simulate.sources.base import SourceUnavailable
from llmkit.simulate.sources.matching import Matcher
from llmkit.simulate.sources.soft_cache import SoftCache

log = logging.getLogger(__name__)

FILE_LIST_KEY = "file_list"
# The seed keeps the file list for 10 minutes whatever cache_ttl says: new files show up within that.
FILE_LIST_TTL = 600.0
# Bytes of each file read to build the matching index: the title and first lines live there.
_HEAD_BYTES = 4096


# The value of simulate.responses_dir nobody changed: when it does not exist here, the shipped answers serve.
DEFAULT_RESPONSES_DIR = "./zresponse"


def shipped_responses_dir() -> Path | None:
    """The answers shipped with llmkit: inside the wheel, or the checkout's zresponse/ (editable install)."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "_zresponse", package.parent / "zresponse"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_responses_dir(configured: str) -> tuple[Path, bool]:
    """(the directory to serve, whether it is the shipped one): the default falls back to the shipped
    answers when there is no ./zresponse, so `llmkit simulate` runs anywhere after `pip install`."""
    path = Path(configured)
    if configured == DEFAULT_RESPONSES_DIR and not path.exists():
        shipped = shipped_responses_dir()
        if shipped is not None:
            return shipped, True
    return path, False


def file_key(name: str) -> str:
    """The cache key of one file's content."""
    return f"file:{name}"


def list_markdown(directory: Path) -> list[str]:
    """Sorted names of the (not hidden) `*.md` files in `directory`; BackendError if missing or empty."""
    try:
        names = sorted(
            p.name
            for p in directory.iterdir()
            if p.suffix == ".md" and not p.name.startswith(".") and p.is_file()
        )
    except FileNotFoundError:
        raise BackendError(f"responses directory {directory} does not exist") from None
    except NotADirectoryError:
        raise BackendError(f"responses directory {directory} is not a directory") from None
    except OSError as exc:
        raise BackendError(
            f"responses directory {directory}: cannot list it ({exc.strerror or exc})"
        ) from exc
    if not names:
        raise BackendError(f"responses directory {directory} has no .md files")
    return names


def head_text(path: Path, lines: int) -> str:
    """The text a file is matched on: its name, its `# ` title and its first non-empty lines."""
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES).decode("utf-8", "replace")
    kept = [path.stem.replace("-", " ").replace("_", " ")]
    for line in head.splitlines():
        line = line.strip()
        if line:
            kept.append(line)
        if len(kept) > lines:
            break
    return " ".join(kept)


@dataclass(frozen=True)
class _Index:
    names: tuple[str, ...]
    matcher: Matcher


def _valid_names(raw: bytes) -> tuple[str, ...] | None:
    """A cached file list, or None if it is not a JSON list of plain `.md` names (never a path)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, list) or not data:
        return None
    for name in data:
        if not isinstance(name, str) or not name.endswith(".md") or "/" in name or "\\" in name:
            return None
        if name.startswith("."):
            return None
    return tuple(data)


class FileSource:
    """Picks the markdown file whose title and first lines best match the prompt, else a random one."""

    name = "file"

    def __init__(
        self, directory: Path, cache: Cache, ttl: float, *, head_lines: int = 4, threshold: float = 0.25
    ) -> None:
        self.directory = directory
        self.cache = cache
        self.ttl = ttl
        self.head_lines = head_lines
        self.threshold = threshold
        self._index = _Index((), Matcher([], threshold))
        self._reindex_lock = asyncio.Lock()
        self.answers = 0
        self.matched = 0
        self.random = 0
        # The cache only saves disk reads, so a cache that fails is logged and bypassed, never fatal.
        self.soft_cache = SoftCache(cache, "file source", log)
        self.disk_reads = 0
        # The cached file list as last read and validated: unchanged bytes need no parsing.
        self._list_raw: bytes | None = None
        self._list_names: tuple[str, ...] = ()
        # name -> (cached bytes, their text): a file whose cached bytes are unchanged is not decoded again.
        self._texts: Memo[str, tuple[bytes, str]] = Memo(max_weight=16_000_000)

    async def start(self) -> None:
        """List the directory and build the matching index; BackendError if it has no .md files."""
        names = tuple(await asyncio.to_thread(list_markdown, self.directory))
        await self._reindex(names)
        await self.soft_cache.set(FILE_LIST_KEY, orjson.dumps(names), FILE_LIST_TTL)
        log.info("file source: %d markdown files in %s", len(names), self.directory)

    async def answer(self, prompt: str, rng: random.Random) -> str:
        """The content of the best-matching file, or of a random one when nothing matches."""
        soft = self.soft_cache
        # With a memory cache, a request whose list and file are cached runs without awaiting anything.
        listed = soft.get_nowait(FILE_LIST_KEY) if soft.immediate else await soft.get(FILE_LIST_KEY)
        index = self._index
        if listed is None or listed is not self._list_raw or self._list_names is not index.names:
            index = await self._current_index(listed)
        found, matched = index.matcher.choose(prompt, rng)
        name = index.names[found]
        self.matched += matched
        self.random += not matched
        self.answers += 1
        key = file_key(name)
        raw = soft.get_nowait(key) if soft.immediate else await soft.get(key)
        if raw is None:
            raw = await self._read(name, key)
        return self._text_of(name, raw)

    def stats(self) -> dict[str, Any]:
        """Answers served, matched vs random, cache hits and misses, files indexed."""
        return {
            "source": self.name,
            "directory": str(self.directory),
            "files": len(self._index.names),
            "answers": self.answers,
            "matched": self.matched,
            "random": self.random,
            **self.soft_cache.stats(),
            "disk_reads": self.disk_reads,
        }

    async def close(self) -> None:
        """Nothing to release: the cache belongs to the caller."""

    async def _current_index(self, raw: bytes | None) -> _Index:
        """The index of the file list the cache holds (`raw`), re-listing the directory when it expired."""
        names: tuple[str, ...] | None = None
        if raw is not None:
            if raw == self._list_raw:
                names = self._list_names
            else:
                names = _valid_names(raw)
                if names is not None:
                    self._list_raw, self._list_names = raw, names
        if names is None:
            try:
                names = tuple(await asyncio.to_thread(list_markdown, self.directory))
            except BackendError as exc:
                raise SourceUnavailable(str(exc)) from exc
            self.disk_reads += 1
            listed = orjson.dumps(names)
            await self.soft_cache.set(FILE_LIST_KEY, listed, FILE_LIST_TTL)
            self._list_raw, self._list_names = listed, names
        index = self._index
        if names != index.names:
            await self._reindex(names)
            index = self._index
        # The fast path of `answer` checks identity: point the list at the index's own tuple.
        self._list_names = index.names
        return index

    async def _reindex(self, names: tuple[str, ...]) -> None:
        """Rebuild the matching index for `names` (once, however many requests notice the change)."""
        async with self._reindex_lock:
            if names == self._index.names:
                return
            keys = await asyncio.to_thread(self._read_heads, names)
            self._index = _Index(names, Matcher(keys, self.threshold))

    def _read_heads(self, names: tuple[str, ...]) -> list[str]:
        keys = []
        for name in names:
            try:
                keys.append(head_text(self.directory / name, self.head_lines))
            except OSError:
                # Listed by another replica or deleted since: it can still be picked at random, and
                # reading its content will say what is wrong.
                keys.append("")
        return keys

    async def _read(self, name: str, key: str) -> bytes:
        """A file's bytes from disk (its cache entry missed), cached for the next request."""
        path = self.directory / name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            # The cached list is stale; drop it so the next request lists the directory again.
            await self.soft_cache.delete(FILE_LIST_KEY)
            raise SourceUnavailable(f"cannot read response file {path}: {exc.strerror or exc}") from exc
        self.disk_reads += 1
        await self.soft_cache.set(key, data, self.ttl)
        return data

    def _text_of(self, name: str, raw: bytes) -> str:
        known = self._texts.get(name)
        if known is not None and known[0] == raw:
            return known[1]
        text = raw.decode("utf-8", "replace")
        self._texts.put(name, (raw, text), len(raw) + 64)
        return text
