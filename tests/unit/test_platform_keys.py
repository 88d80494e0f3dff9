"""llmkit.platform.keys: the `llk_<id>_<secret>` format round-trips whatever the secret's characters, and
a credential verified lately is known without a second verification for no longer than its key row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmkit.core.auth import AuthError
from llmkit.platform.keys import KeyVerifier, hash_secret, issue_key, parse_key
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import PlatformStore
from tests.clock import Clock


@pytest.mark.parametrize("secret", ["_leading", "in_the_middle", "trailing_", "-dash-", "__"])
def test_a_secret_with_underscores_or_dashes_parses_whole(secret: str) -> None:
    assert parse_key(f"llk_abc123_{secret}") == ("abc123", secret)


@pytest.mark.parametrize("text", ["", "llk_", "llk_abc", "llk__secret", "llk_ab-c_secret", "sk_abc_secret"])
def test_anything_else_is_not_a_key(text: str) -> None:
    assert parse_key(text) is None


def test_issued_keys_parse_back_to_their_stored_hash() -> None:
    for _ in range(200):  # token_urlsafe yields '_' and '-' often enough to hit both within 200 keys
        key, text = issue_key(name="n", pepper="p")
        parsed = parse_key(text)
        assert parsed is not None and parsed[0] == key.id
        assert hash_secret(parsed[1], "p") == key.secret_hash


@pytest.fixture
async def verified(tmp_path: Path) -> AsyncIterator[tuple[KeyVerifier, PlatformStore, Clock, Clock, str]]:
    """A verifier over a real SQLite store holding one chat key of tenant t1 (expiring at wall 2000)."""
    store = platform_store_from_url(f"sqlite:///{tmp_path}/p.db")
    await store.open()
    key, text = issue_key(
        name="k", tenant_id=None, scopes=("chat",), pepper="pep", expires_at=2000.0, now=1.0
    )
    await store.add_key(key)
    mono, wall = Clock(100.0), Clock(1000.0)
    verifier = KeyVerifier(store, pepper="pep", cache_ttl=1.0, clock=mono, wall=wall)
    try:
        yield verifier, store, mono, wall, text
    finally:
        await store.close()


async def test_a_verified_credential_is_known_until_its_key_row_is_stale(
    verified: tuple[KeyVerifier, PlatformStore, Clock, Clock, str],
) -> None:
    verifier, _, mono, wall, text = verified
    assert verifier.known(text) is None  # never verified: the slow path decides
    identity = await verifier.identify(text)
    assert verifier.known(text) is identity
    wall.now = 1500.0
    assert verifier.known(text) is identity and verifier.used[identity.key_id or ""] == 1500.0
    mono.now = 100.999
    assert verifier.known(text) is identity
    mono.now = 101.0  # the row was read at 100.0 with a 1 s ttl: read it again
    assert verifier.known(text) is None


async def test_a_wrong_secret_for_a_known_id_is_never_known(
    verified: tuple[KeyVerifier, PlatformStore, Clock, Clock, str],
) -> None:
    verifier, _, _, _, text = verified
    await verifier.identify(text)
    wrong = text[:-1] + ("A" if text[-1] != "A" else "B")
    assert verifier.known(wrong) is None
    with pytest.raises(AuthError) as refused:
        await verifier.identify(wrong)
    assert refused.value.status == 401
    assert verifier.known(wrong) is None


async def test_a_revoke_elsewhere_is_seen_within_the_ttl_and_here_at_once(
    verified: tuple[KeyVerifier, PlatformStore, Clock, Clock, str],
) -> None:
    verifier, store, mono, _, text = verified
    identity = await verifier.identify(text)
    await store.revoke_key(identity.key_id or "", at=1000.0)  # another replica revoked it
    mono.now = 100.5
    assert verifier.known(text) is identity  # this replica's row is half a second old
    mono.now = 101.0
    assert verifier.known(text) is None
    with pytest.raises(AuthError) as refused:
        await verifier.identify(text)
    assert refused.value.status == 403
    assert verifier.known(text) is None


async def test_forgetting_a_key_drops_what_was_verified(
    verified: tuple[KeyVerifier, PlatformStore, Clock, Clock, str],
) -> None:
    verifier, store, _, _, text = verified
    identity = await verifier.identify(text)
    await store.revoke_key(identity.key_id or "", at=1000.0)
    verifier.forget_key(identity.key_id or "")  # this replica revoked it
    assert verifier.known(text) is None
    with pytest.raises(AuthError):
        await verifier.identify(text)


async def test_an_expired_key_is_not_known_and_is_refused(
    verified: tuple[KeyVerifier, PlatformStore, Clock, Clock, str],
) -> None:
    verifier, _, _, wall, text = verified
    await verifier.identify(text)
    wall.now = 2000.0
    assert verifier.known(text) is None
    with pytest.raises(AuthError) as refused:
        await verifier.identify(text)
    assert refused.value.status == 403 and refused.value.code == "key_expired"
