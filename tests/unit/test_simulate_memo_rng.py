"""The hot path's bounded memo and the lazily seeded per-request rng."""

from __future__ import annotations

import random

import pytest

from llmkit.core.memo import Memo
from llmkit.simulate.rng import RequestRandom


def test_memo_drops_oldest_over_budget() -> None:
    memo: Memo[str, int] = Memo(max_weight=3)
    for i, key in enumerate("abcd"):
        memo.put(key, i)
    assert (memo.get("a"), memo.get("d"), len(memo)) == (None, 3, 3)
    assert memo.put("huge", 9, weight=4) == 9
    assert memo.get("huge") is None


def test_memo_stays_within_budget_under_churn_and_reputs() -> None:
    memo: Memo[int, int] = Memo(max_weight=100)
    for i in range(20_000):
        memo.put(i % 300, i, weight=1 + i % 7)
        assert memo._weight <= 100
    assert memo._weight == sum(memo._weights.values()) and len(memo) == len(memo._weights)
    # The newest entries survive, and a re-put value replaces the old one.
    assert memo.get(19_999 % 300) == 19_999
    memo.put(5, -1, weight=1)
    assert memo.get(5) == -1


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1])
def test_request_random_draws_like_random(seed: int) -> None:
    def draws(rng: random.Random) -> list[object]:
        return [
            rng.random(),
            rng.choice("abcdef"),
            rng.uniform(1, 2),
            rng.choices("xyz", k=8),
            rng.getrandbits(70),
        ]

    assert draws(RequestRandom(seed)) == draws(random.Random(seed))
    assert RequestRandom(seed).getstate() == random.Random(seed).getstate()
