"""The conversation cache: each conversation's history, by `conversation_id` or by its messages' hash.

A request with a `conversation_id` the gateway knows may send only its new messages: the stored history
goes before them (a request that repeats the whole history is taken as it is). A request without one is
matched by the hash of its history before the last message, which is how the previous turn was stored;
either way the answer tells the conversation's id, and the history with the answer is stored for the
next turn. Entries live `conversation_ttl_s` in size-bounded caches of their own.

Most conversations under an id the gateway made up are never continued (one-off prompts), so their first
turn goes to a cache of its own, `conversation_new_share` of the budget: a flood of one-off prompts
cycles through it and cannot push out the conversations clients came back to. A conversation moves to
the main cache on its second turn, or at once when the client chose its id.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llmkit.core.auth import DEFAULT_TENANT
from llmkit.core.cache.base import Cache, hit_rate
from llmkit.core.ids import fresh_hex
from llmkit.errors import BackendError

log = logging.getLogger("llmkit.gateway")
Messages = tuple[Mapping[str, Any], ...]
# Counters of the two caches that add up to the conversation cache's own.
_SUMMED = ("hits", "misses", "sets", "entries", "bytes", "evictions", "expirations", "rejected")


def encode_history(messages: Messages) -> bytes:
    """Messages as canonical JSON (sorted keys): what is stored, and what is hashed."""
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)


def history_hash(encoded: bytes) -> str:
    """The hash of an encoded history, naming the conversation that continues it."""
    return hashlib.sha256(encoded).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation a request continues: its id, and whether a client has come back to it."""

    id: str
    # False for an id the gateway just made up: nobody has continued it yet.
    known: bool
    # The id's first turn sits in the cache of new conversations (moved out on this turn).
    was_new: bool = False
    # Where the tenant's conversations live in the cache: "" for the default tenant, else "t:<id>:",
    # so one tenant can neither continue nor read another's conversation, even knowing its id.
    space: str = ""


def tenant_space(tenant_id: str) -> str:
    """The key prefix of a tenant's conversations."""
    return "" if tenant_id == DEFAULT_TENANT else f"t:{tenant_id}:"


def combined(kept: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The two caches' counters as one cache's (max_bytes None when either has no byte budget)."""
    total = {**kept, **{name: kept.get(name, 0) + new.get(name, 0) for name in _SUMMED}}
    total["max_bytes"] = (
        kept["max_bytes"] + new["max_bytes"] if kept.get("max_bytes") and new.get("max_bytes") else None
    )
    total["hit_rate"] = hit_rate(total["hits"], total["misses"])
    return total


class ConversationCache:
    """Histories by conversation id, and conversation ids by the hash of their history."""

    def __init__(self, cache: Cache, ttl: float, new: Cache | None = None) -> None:
        self.cache = cache
        # First turns of conversations under a made-up id (the main cache when None).
        self.new = new if new is not None else cache
        self.ttl = ttl
        self.hits = 0
        self.misses = 0

    async def resolve(
        self, conversation_id: str | None, messages: Messages, tenant_id: str = DEFAULT_TENANT
    ) -> tuple[Conversation, Messages]:
        """The conversation and the whole history this request continues (stored + new messages)."""
        space = tenant_space(tenant_id)
        if conversation_id is not None:
            raw, was_new = await self._lookup(f"{space}id:{conversation_id}")
            # An id the client chose counts as known: it means to come back with it.
            conversation = Conversation(conversation_id, True, was_new, space)
            if raw is None:
                self.misses += 1
                return conversation, messages
            self.hits += 1
            stored = tuple(orjson.loads(raw))
            if messages[: len(stored)] == stored:
                return conversation, messages
            return conversation, stored + messages
        if len(messages) > 1:
            raw, was_new = await self._lookup(f"{space}prefix:{history_hash(encode_history(messages[:-1]))}")
            if raw is not None:
                self.hits += 1
                return Conversation(raw.decode(), True, was_new, space), messages
        self.misses += 1
        return Conversation(fresh_hex(), False, space=space), messages

    async def remember(self, conversation: Conversation, messages: Messages, answer: str) -> None:
        """Store the history with the answer for the conversation's next turn."""
        # One encoding serves as the stored history and as the key of the next turn's lookup.
        encoded = encode_history((*messages, {"role": "assistant", "content": answer}))
        cache = self.cache if conversation.known else self.new
        try:
            space = conversation.space
            await cache.set(f"{space}id:{conversation.id}", encoded, self.ttl)
            await cache.set(f"{space}prefix:{history_hash(encoded)}", conversation.id, self.ttl)
            if conversation.was_new and self.new is not self.cache:
                # Its first turn is superseded; the first turn's prefix entry ages out with the others.
                await self.new.delete(f"{space}id:{conversation.id}")
        except BackendError as exc:
            log.warning("conversation cache unavailable, history not stored: %s", exc)

    async def _lookup(self, key: str) -> tuple[bytes | None, bool]:
        """The value under `key` in the main cache, else in the new conversations' (then True)."""
        try:
            raw = await self.cache.get(key)
            if raw is not None or self.new is self.cache:
                return raw, False
            raw = await self.new.get(key)
            return raw, raw is not None
        except BackendError as exc:
            log.warning("conversation cache unavailable, starting afresh: %s", exc)
            return None, False

    async def clear(self) -> int:
        """Drop every stored conversation; how many entries went."""
        removed = await self.cache.clear()
        if self.new is not self.cache:
            removed += await self.new.clear()
        return removed

    async def close(self) -> None:
        """Close the caches."""
        await self.cache.close()
        if self.new is not self.cache:
            await self.new.close()

    async def stats(self) -> dict[str, Any]:
        """Hits and misses of conversation lookups, with the caches' counters (`cache`: both together)."""
        kept = await self.cache.stats()
        body: dict[str, Any] = {
            "lookups_hits": self.hits,
            "lookups_misses": self.misses,
            "hit_rate": hit_rate(self.hits, self.misses),
            "cache": kept,
        }
        if self.new is not self.cache:
            new = await self.new.stats()
            body.update(cache=combined(kept, new), continued_cache=kept, new_cache=new)
        return body
