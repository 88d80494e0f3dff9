"""llmkit.platform.keys: the `llk_<id>_<secret>` format round-trips whatever the secret's characters."""

from __future__ import annotations

import pytest

from llmkit.platform.keys import hash_secret, issue_key, parse_key


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
