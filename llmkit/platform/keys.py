"""API keys: `llk_<public id>_<secret>`, issued once, stored as a hash, verified with a short-lived cache.

A revoke takes effect on every replica within `cache_ttl` (1 s): each one reads the key from the shared
store again after that. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from llmkit.core.auth import ADMIN, DEFAULT_TENANT, KEY_SCOPES, AuthError, Identity
from llmkit.errors import BackendError
from llmkit.platform.store.base import ApiKey, PlatformStore, Tenant

log = logging.getLogger("llmkit.platform")

KEY_PREFIX = "llk_"
# 24 bytes of `secrets`: 192 bits, well above the 128 a guess must beat.
SECRET_BYTES = 24
ID_BYTES = 6
# Lookups kept per process; beyond it the oldest go first (random ids cannot grow memory for ever).
CACHE_MAX = 20_000
# What KeyVerifier remembers a verified credential by: a 256-bit cryptographic digest of it, so the
# memory never holds a secret. BLAKE2s, not SHA-256: CPython's own code, it costs about half as much
# on a credential (OpenSSL's SHA-256 sets up and frees a digest context per call), and every request
# with a key computes one.
_credential_digest = hashlib.blake2s


def hash_secret(secret: str, pepper: str = "") -> str:
    """The stored form of a secret: SHA-256, or HMAC-SHA-256 with the pepper when one is set."""
    if pepper:
        return hmac.digest(pepper.encode(), secret.encode(), "sha256").hex()  # one C call, same HMAC
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(text: str) -> tuple[str, str] | None:
    """`llk_<id>_<secret>` -> (id, secret); None for anything else."""
    if not text.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = text[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or not key_id.isalnum() or len(key_id) > 32:
        return None
    return key_id, secret


def check_scopes(scopes: Sequence[Any]) -> tuple[str, ...]:
    """Scopes as stored (known, deduplicated, in KEY_SCOPES order); ValueError naming the valid ones."""
    unknown = [s for s in scopes if s not in KEY_SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty list of {', '.join(KEY_SCOPES)}; got {list(scopes)!r}")
    return tuple(s for s in KEY_SCOPES if s in scopes)


def issue_key(
    *,
    name: str,
    description: str = "",
    tenant_id: str | None = None,
    scopes: Sequence[str] = ("chat",),
    expires_at: float | None = None,
    pepper: str = "",
    now: float | None = None,
) -> tuple[ApiKey, str]:
    """A new key to store, and the full `llk_...` text to show once (it is never stored)."""
    key_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    key = ApiKey(
        id=key_id,
        secret_hash=hash_secret(secret, pepper),
        name=name,
        description=description,
        tenant_id=tenant_id,
        scopes=check_scopes(scopes),
        created_at=time.time() if now is None else now,
        expires_at=expires_at,
    )
    return key, f"{KEY_PREFIX}{key_id}_{secret}"


def identity_of_key(key: ApiKey) -> Identity:
    """What a valid key may do: its scopes, in its tenant (an admin key of no tenant: every tenant)."""
    return Identity(
        key.id,
        key.tenant_id or DEFAULT_TENANT,
        frozenset(key.scopes),
        platform_admin=ADMIN in key.scopes and key.tenant_id is None,
    )


MISS: Any = object()  # what ShortCache.peek answers when the value must be read


class ShortCache:
    """Values by id for `ttl` seconds, one store read per id at a time (concurrent misses share it)."""

    def __init__(self, load: Callable[[str], Any], ttl: float, clock: Callable[[], float]) -> None:
        self._load = load
        self.ttl = ttl
        self._clock = clock
        self._rows: dict[str, tuple[float, Any]] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}

    def peek(self, item_id: str) -> Any:
        """The value if read less than `ttl` ago, else MISS (without awaiting: the usual case is a hit)."""
        hit = self._rows.get(item_id)
        if hit is not None and self._clock() - hit[0] < self.ttl:
            return hit[1]
        return MISS

    async def get(self, item_id: str) -> Any:
        """The value, from memory when read less than `ttl` ago."""
        now = self._clock()
        hit = self._rows.get(item_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        pending = self._loading.get(item_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[item_id] = future
        try:
            value = await self._load(item_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(value)
        finally:
            del self._loading[item_id]
        if len(self._rows) >= CACHE_MAX:
            self._rows.pop(next(iter(self._rows)))
        self._rows[item_id] = (now, value)
        return value

    def forget(self, item_id: str) -> None:
        """Read `item_id` from the store next time (this process changed it)."""
        self._rows.pop(item_id, None)

    def fresh_until(self, item_id: str) -> float:
        """When the value held for `item_id` must be read again (on the cache's clock; 0: not held)."""
        hit = self._rows.get(item_id)
        return 0.0 if hit is None else hit[0] + self.ttl


class KeyVerifier:
    """core.auth's Verifier for `llk_` keys in the platform store; remembers when each key was used."""

    def __init__(
        self,
        store: PlatformStore,
        *,
        pepper: str = "",
        cache_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._pepper = pepper
        self._wall = wall
        self._clock = clock
        self.keys = ShortCache(store.key, cache_ttl, clock)
        self.tenants = ShortCache(store.tenant, cache_ttl, clock)
        # key id -> when it was last used; written to the store by flush_usage, off the request path.
        self.used: dict[str, float] = {}
        self._identities: dict[str, tuple[ApiKey, Identity]] = {}
        # The digest of a whole credential verified lately -> (until when, its key row, its identity). Every
        # request presents one, so a credential verified within the cache's ttl is not verified again:
        # found by its digest (the dict never holds a secret and its lookup times reveal none), it needs
        # no await, and it expires with the key row it was checked against, so a revoke still takes
        # effect within `cache_ttl`.
        self._verified: dict[bytes, tuple[float, ApiKey, Identity]] = {}

    def recognizes(self, credential: str) -> bool:
        return credential.startswith(KEY_PREFIX)

    def known(self, credential: str) -> Identity | None:
        """The identity of a credential verified against a key row read less than `cache_ttl` ago, or
        None: then `identify` decides (and refuses, if the key expired since)."""
        entry = self._verified.get(_credential_digest(credential.encode()).digest())
        if entry is None or self._clock() >= entry[0]:
            return None
        key = entry[1]
        now = self._wall()
        if key.expires_at is not None and key.expires_at <= now:
            return None
        self.used[key.id] = now
        return entry[2]

    def forget_key(self, key_id: str) -> None:
        """Read the key from the store on its next use (this process revoked or changed it)."""
        self.keys.forget(key_id)
        self._verified.clear()  # rare: cheaper than an index from key ids to digests

    async def identify(self, credential: str) -> Identity:
        """The key's identity; 401 for a malformed, unknown or wrong key, 403 for a revoked or expired one."""
        parsed = parse_key(credential)
        if parsed is None:
            raise AuthError(401, "invalid_api_key", "malformed API key: expected llk_<id>_<secret>")
        key_id, secret = parsed
        try:
            key: ApiKey | None = self.keys.peek(key_id)
            if key is MISS:
                key = await self.keys.get(key_id)
        except BackendError as exc:
            raise BackendError(
                f"cannot check the API key: the platform store is unavailable ({exc})"
            ) from exc
        # Hash before deciding, so an unknown id and a wrong secret take the same time.
        presented = hash_secret(secret, self._pepper)
        if key is None or not hmac.compare_digest(presented, key.secret_hash):
            raise AuthError(401, "invalid_api_key", "unknown API key (or a wrong secret for its id)")
        now = self._wall()
        if key.revoked_at is not None:
            raise AuthError(403, "key_revoked", f"API key {key.id} was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthError(403, "key_expired", f"API key {key.id} has expired")
        self.used[key.id] = now
        # One Identity per stored row read: a key's requests share it until the cache reads it again.
        known = self._identities.get(key.id)
        if known is None or known[0] is not key:
            if len(self._identities) >= CACHE_MAX:
                self._identities.clear()
            known = self._identities[key.id] = (key, identity_of_key(key))
        if len(self._verified) >= CACHE_MAX:
            self._verified.clear()
        until = self.keys.fresh_until(key.id)
        self._verified[_credential_digest(credential.encode()).digest()] = (until, key, known[1])
        return known[1]

    async def tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant (and its quotas) as the store had it at most `cache_ttl` ago."""
        tenant: Tenant | None = self.tenants.peek(tenant_id)
        if tenant is MISS:
            tenant = await self.tenants.get(tenant_id)
        return tenant

    async def flush_usage(self) -> None:
        """Write the last-used times gathered since the previous flush."""
        if not self.used:
            return
        used, self.used = self.used, {}
        try:
            await self.store.touch_keys(used)
        except BackendError as exc:
            log.warning("could not record when %d API keys were last used: %s", len(used), exc)
            for key_id, at in used.items():
                self.used.setdefault(key_id, at)
