"""The numbers of `llmkit publish`: latency percentiles and the --verify rules, as pure functions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The /stats counters whose deltas --verify compares.
COUNTERS = ("received", "unique_processed", "duplicated_dropped")


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ...} of `values`, interpolated between closest ranks (numpy's default); None if empty."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for q in qs:
        if not ordered:
            result[f"p{q:g}"] = None
            continue
        rank = (len(ordered) - 1) * q / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        result[f"p{q:g}"] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return result


@dataclass(frozen=True)
class Expected:
    """What the run knows it did, to compare with the server's /stats deltas."""

    acknowledged: int  # events in batches answered 200/202
    unknown_events: int  # events in attempts that may or may not have been stored
    distinct_acked: int  # distinct (topic, event_id) in acknowledged batches
    distinct_possible: int  # ... in acknowledged batches or in attempts of unknown outcome
    distinct_unknown: int  # ... in attempts of unknown outcome
    fresh: bool  # the run's ids are new to the server (no --seed)
    accepted: int | None  # the sum of the server's `accepted` answers; None if a batch was queued (202)


def _outside(name: str, value: int, low: int, high: int, why: str) -> list[str]:
    if low <= value <= high:
        return []
    want = str(low) if low == high else f"between {low} and {high}"
    return [f"{name} grew by {value}, expected {want}: {why}"]


def verify_counts(expected: Expected, delta: Mapping[str, int]) -> list[str]:
    """Every way the server's /stats deltas disagree with what was sent (empty when they agree)."""
    received, unique, dropped = (delta[name] for name in COUNTERS)
    problems = []
    if received != unique + dropped:
        problems.append(
            f"received grew by {received}, but unique_processed + duplicated_dropped grew by "
            f"{unique} + {dropped} = {unique + dropped}"
        )
    acked, unknown = expected.acknowledged, expected.unknown_events
    why = f"{acked} events were acknowledged"
    why += f" and {unknown} more were in attempts of unknown outcome" if unknown else " (no unknown outcomes)"
    problems += _outside("received", received, acked, acked + unknown, why)
    if expected.fresh:
        why = f"{expected.distinct_acked} distinct new events were acknowledged"
        if expected.distinct_possible > expected.distinct_acked:
            why += f", {expected.distinct_possible - expected.distinct_acked} more may have been stored"
        problems += _outside(
            "unique_processed", unique, expected.distinct_acked, expected.distinct_possible, why
        )
    if expected.accepted is not None:
        low, high = expected.accepted, expected.accepted + expected.distinct_unknown
        why = f"the server's 200 answers accepted {low} new events"
        problems += _outside("unique_processed", unique, low, high, why)
    return problems
