"""The conversation cache: each conversation's history, by `conversation_id` or by its messages' hash.

A request with a `conversation_id` the gateway knows may send only its new messages: the stored history
goes before them (a request that repeats the whole history is taken as it is). A request without one is
matched by the hash of its history before the last message, which is how the previous turn was stored;
either way the answer tells the conversation's id, and the history with the answer is stored for the
next turn. Entries live `conversation_ttl_s` in a size-bounded cache of their own.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from llmkit.core.cache.base import Cache, hit_rate
from llmkit.core.ids import fresh_hex
from llmkit.errors import BackendError

log = logging.getLogger("llmkit.gateway")
Messages = tuple[Mapping[str, Any], ...]


def encode_history(messages: Messages) -> bytes:
    """Messages as canonical JSON (sorted keys): what is stored, and what is hashed."""
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)


def history_hash(encoded: bytes) -> str:
    """The hash of an encoded history, naming the conversation that continues it."""
    return hashlib.sha256(encoded).hexdigest()[:32]


class ConversationCache:
    """Histories by conversation id, and conversation ids by the hash of their history."""

    def __init__(self, cache: Cache, ttl: float) -> None:
        self.cache = cache
        self.ttl = ttl
        self.hits = 0
        self.misses = 0

    async def resolve(self, conversation_id: str | None, messages: Messages) -> tuple[str, Messages]:
        """The conversation's id and the whole history this request continues (stored + new messages)."""
        if conversation_id is not None:
            raw = await self._get(f"id:{conversation_id}")
            if raw is None:
                self.misses += 1
                return conversation_id, messages
            self.hits += 1
            stored = tuple(orjson.loads(raw))
            if messages[: len(stored)] == stored:
                return conversation_id, messages
            return conversation_id, stored + messages
        if len(messages) > 1:
            raw = await self._get(f"prefix:{history_hash(encode_history(messages[:-1]))}")
            if raw is not None:
                self.hits += 1
                return raw.decode(), messages
        self.misses += 1
        return fresh_hex(), messages

    async def remember(self, conversation_id: str, messages: Messages, answer: str) -> None:
        """Store the history with the answer for the conversation's next turn."""
        # One encoding serves as the stored history and as the key of the next turn's lookup.
        encoded = encode_history((*messages, {"role": "assistant", "content": answer}))
        try:
            await self.cache.set(f"id:{conversation_id}", encoded, self.ttl)
            await self.cache.set(f"prefix:{history_hash(encoded)}", conversation_id, self.ttl)
        except BackendError as exc:
            log.warning("conversation cache unavailable, history not stored: %s", exc)

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self.cache.get(key)
        except BackendError as exc:
            log.warning("conversation cache unavailable, starting afresh: %s", exc)
            return None

    async def stats(self) -> dict[str, Any]:
        """Hits and misses of conversation lookups, with the cache's own counters."""
        return {
            "lookups_hits": self.hits,
            "lookups_misses": self.misses,
            "hit_rate": hit_rate(self.hits, self.misses),
            "cache": await self.cache.stats(),
        }
