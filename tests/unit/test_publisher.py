"""The publisher's pure parts: event generation, percentiles, the --verify rules, error messages, URLs."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.aggregate.events import rows_of
from llmkit.aggregate.publisher import server_message
from llmkit.aggregate.verify import Expected, percentiles, verify_counts
from llmkit.aggregate.workload import plan_events
from llmkit.cli.publish import base_url, default_url


def sent_keys(plan_batches: list[list[int]]) -> list[int]:
    return [key for keys in plan_batches for key in keys]


def test_a_plan_has_the_count_the_duplicate_share_and_the_batches() -> None:
    plan = plan_events(5000, 0.2, 3, 500, seed=1)
    keys = sent_keys([batch.keys for batch in plan.batches])
    assert plan.count == len(keys) == 5000
    assert [batch.size for batch in plan.batches] == [500] * 10
    assert plan.duplicates == 1000 and len(plan.ids) == len(set(keys)) == 4000
    # Every repeat copies an event sent earlier in the run.
    first_seen: dict[int, int] = {}
    for position, key in enumerate(keys):
        first_seen.setdefault(key, position)
    assert sorted(first_seen) == list(range(4000))
    assert all(first_seen[key] < position for position, key in enumerate(keys) if first_seen[key] != position)


def test_duplicates_land_in_the_same_batch_and_across_batches() -> None:
    plan = plan_events(10_000, 0.3, 1, 1000, seed=2)
    same = across = 0
    seen_before: set[int] = set()
    for batch in plan.batches:
        in_batch: set[int] = set()
        for key in batch.keys:
            if key in in_batch:
                same += 1
            elif key in seen_before:
                across += 1
            in_batch.add(key)
        seen_before |= in_batch
    assert same + across == 3000
    assert same > 500 and across > 500


def test_the_bodies_are_valid_publish_requests_with_the_planned_events() -> None:
    plan = plan_events(120, 0.25, 4, 50, seed=3, now=datetime(2025, 10, 28, 10, 0, tzinfo=UTC))
    assert [batch.size for batch in plan.batches] == [50, 50, 20]
    for batch in plan.batches:
        body = orjson.loads(batch.body)
        rows = rows_of(body)  # the aggregator's own validation accepts every event
        assert [(row[0], row[1]) for row in rows] == [(plan.topics[k], plan.ids[k]) for k in batch.keys]
    first = orjson.loads(plan.batches[0].body)["events"][0]
    assert first["timestamp"] == first["payload"]["timestamp"] == "2025-10-28T10:00:00.000Z"
    assert first["source"] == "llmkit-publish"
    assert set(plan.topics) == {"topic-1", "topic-2", "topic-3", "topic-4"}


def test_topics_are_spread_over_the_events() -> None:
    plan = plan_events(3000, 0.0, 3, 1000, seed=4)
    counts = Counter(plan.topics)
    assert set(counts) == {"topic-1", "topic-2", "topic-3"}
    assert min(counts.values()) > 800


def test_a_seed_repeats_ids_topics_and_positions() -> None:
    one = plan_events(2000, 0.2, 3, 100, seed=7)
    two = plan_events(2000, 0.2, 3, 100, seed=7)
    other = plan_events(2000, 0.2, 3, 100, seed=8)
    assert one.ids == two.ids and one.topics == two.topics
    assert [b.keys for b in one.batches] == [b.keys for b in two.batches]
    assert [b.keys for b in one.batches] != [b.keys for b in other.batches]
    assert not set(one.ids) & set(other.ids)


def test_without_a_seed_every_run_has_fresh_ids() -> None:
    one = plan_events(1000, 0.2, 1, 100)
    two = plan_events(1000, 0.2, 1, 100)
    assert len(set(one.ids)) == 800
    assert not set(one.ids) & set(two.ids)


@pytest.mark.parametrize(
    ("count", "share", "repeats"), [(1, 0.99, 0), (2, 0.5, 1), (10, 0.0, 0), (7, 0.9, 6)]
)
def test_small_runs_keep_at_least_one_new_event(count: int, share: float, repeats: int) -> None:
    plan = plan_events(count, share, 2, 3, seed=0)
    assert plan.count == count and plan.duplicates == repeats and len(plan.ids) == count - repeats
    assert plan.batches[0].keys[0] == 0


@given(
    count=st.integers(1, 400),
    share=st.floats(0, 0.999),
    topics=st.integers(1, 5),
    batch=st.integers(1, 120),
    seed=st.integers(0, 2**32),
)
def test_any_plan_adds_up(count: int, share: float, topics: int, batch: int, seed: int) -> None:
    plan = plan_events(count, share, topics, batch, seed=seed)
    keys = sent_keys([b.keys for b in plan.batches])
    assert len(keys) == count and plan.duplicates == int(count * share)
    assert len(set(keys)) == len(plan.ids) == count - plan.duplicates
    assert all(0 < b.size <= batch for b in plan.batches)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([4.0]) == {"p50": 4.0, "p95": 4.0, "p99": 4.0}
    assert percentiles([3.0, 1.0, 2.0, 4.0], (0, 50, 100)) == {"p0": 1.0, "p50": 2.5, "p100": 4.0}
    values = [float(v) for v in range(1, 101)]  # 1..100
    result = percentiles(values)
    assert result["p50"] == pytest.approx(50.5)
    assert result["p95"] == pytest.approx(95.05)
    assert result["p99"] == pytest.approx(99.01)


CLEAN = Expected(
    acknowledged=1000,
    unknown_events=0,
    distinct_acked=800,
    distinct_possible=800,
    distinct_unknown=0,
    fresh=True,
    accepted=800,
)


def delta(received: int, unique: int, dropped: int) -> dict[str, int]:
    return {"received": received, "unique_processed": unique, "duplicated_dropped": dropped}


def test_verify_accepts_exact_numbers() -> None:
    assert verify_counts(CLEAN, delta(1000, 800, 200)) == []


def test_verify_needs_received_to_be_unique_plus_dropped() -> None:
    [problem] = verify_counts(replace(CLEAN, fresh=False, accepted=None), delta(1000, 800, 199))
    assert (
        problem == "received grew by 1000, but unique_processed + duplicated_dropped grew by 800 + 199 = 999"
    )


def test_verify_without_unknown_outcomes_needs_received_to_equal_acknowledged() -> None:
    problems = verify_counts(CLEAN, delta(1001, 800, 201))
    assert problems == [
        "received grew by 1001, expected 1000: 1000 events were acknowledged (no unknown outcomes)"
    ]
    assert verify_counts(CLEAN, delta(999, 800, 199))[0].startswith("received grew by 999, expected 1000")


def test_verify_allows_the_retried_events_of_unknown_attempts() -> None:
    # A 100-event batch timed out (maybe stored) and was retried: received may grow by up to 100 more.
    expected = replace(CLEAN, unknown_events=100, distinct_unknown=90)
    assert verify_counts(expected, delta(1000, 800, 200)) == []
    assert verify_counts(expected, delta(1100, 800, 300)) == []
    [problem] = verify_counts(expected, delta(1101, 800, 301))
    assert problem == (
        "received grew by 1101, expected between 1000 and 1100: 1000 events were acknowledged "
        "and 100 more were in attempts of unknown outcome"
    )


def test_verify_counts_distinct_events_of_failed_unknown_attempts_as_maybe_stored() -> None:
    # A batch that failed after timeouts may still have been stored: 50 distinct events in doubt.
    expected = replace(CLEAN, unknown_events=150, distinct_possible=850, distinct_unknown=50, accepted=800)
    assert verify_counts(expected, delta(1000, 800, 200)) == []
    assert verify_counts(expected, delta(1150, 850, 300)) == []
    problems = verify_counts(expected, delta(1150, 851, 299))
    assert problems == [
        "unique_processed grew by 851, expected between 800 and 850: 800 distinct new events were "
        "acknowledged, 50 more may have been stored",
        "unique_processed grew by 851, expected between 800 and 850: the server's 200 answers accepted "
        "800 new events",
    ]


def test_verify_with_fresh_ids_needs_every_distinct_event_new() -> None:
    [problem] = verify_counts(replace(CLEAN, accepted=None), delta(1000, 799, 201))
    assert problem == "unique_processed grew by 799, expected 800: 800 distinct new events were acknowledged"


def test_verify_with_a_reused_seed_trusts_the_accepted_answers() -> None:
    rerun = replace(CLEAN, fresh=False, accepted=0)
    assert verify_counts(rerun, delta(1000, 0, 1000)) == []
    [problem] = verify_counts(rerun, delta(1000, 5, 995))
    assert problem == "unique_processed grew by 5, expected 0: the server's 200 answers accepted 0 new events"


def test_verify_with_a_reused_seed_and_queued_answers_checks_only_received() -> None:
    queued = replace(CLEAN, fresh=False, accepted=None)
    assert verify_counts(queued, delta(1000, 3, 997)) == []


def test_verify_reports_every_mismatch_at_once() -> None:
    problems = verify_counts(CLEAN, delta(1200, 900, 100))
    assert len(problems) == 4
    assert [p.split(" grew")[0] for p in problems] == [
        "received",
        "received",
        "unique_processed",
        "unique_processed",
    ]


def test_server_messages_are_extracted() -> None:
    assert (
        server_message(b'{"error": {"code": "x", "message": "the channel is full"}}') == "the channel is full"
    )
    detail = b'{"detail": [{"loc": ["body", "events", 0, "topic"], "msg": "Field required"}, {"msg": "x"}]}'
    assert server_message(detail) == "body.events.0.topic: Field required (and 1 more)"
    assert server_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert server_message(b"") == "(empty body)"


def test_default_and_base_urls() -> None:
    assert default_url({}) == "http://127.0.0.1:8000"
    assert default_url({"AGGREGATOR_HOST": "aggregate", "AGGREGATOR_PORT": "9000"}) == "http://aggregate:9000"
    assert default_url({"AGGREGATOR_PORT": "9000"}) == "http://127.0.0.1:9000"
    assert base_url("127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert base_url("http://h:1/publish") == "http://h:1"
