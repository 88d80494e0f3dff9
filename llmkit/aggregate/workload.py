"""What `llmkit publish` sends: generated events with a share of repeats, in pre-serialized batches."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

SOURCE = "llmkit-publish"


@dataclass(frozen=True)
class Batch:
    """One pre-serialized POST /publish body and the plan index of each of its events (repeats included)."""

    body: bytes
    keys: list[int]

    @property
    def size(self) -> int:
        """Events in the batch."""
        return len(self.keys)


@dataclass(frozen=True)
class Plan:
    """Every batch of a run, built before the clock starts; `ids[k]`, `topics[k]` name distinct event k."""

    batches: list[Batch]
    ids: list[str]
    topics: list[str]
    duplicates: int

    @property
    def count(self) -> int:
        """Events the run sends, repeats included."""
        return sum(batch.size for batch in self.batches)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plan_events(
    count: int,
    duplicates: float,
    topics: int,
    batch_size: int,
    seed: int | None = None,
    now: datetime | None = None,
) -> Plan:
    """`count` events in batches; int(count * duplicates) of them repeat an earlier event of the run.

    With a seed the ids, topics and repeat positions are the same every run; without one the ids carry a
    random run token, so runs against the same server never collide.
    """
    rng = random.Random(seed)
    run = f"seed{seed}" if seed is not None else uuid.uuid4().hex[:12]
    repeats = int(count * duplicates)
    # The first event is new; the repeats are spread at random over the rest of the run.
    is_repeat = [True] * repeats + [False] * (count - repeats - 1)
    rng.shuffle(is_repeat)
    is_repeat.insert(0, False)
    names = [f"topic-{k}" for k in range(1, topics + 1)]
    base = now or datetime.now(UTC)
    ids: list[str] = []
    topic_of: list[str] = []
    encoded: list[bytes] = []
    batches: list[Batch] = []
    keys: list[int] = []
    new_in_batch: list[int] = []
    for repeat in is_repeat:
        if not repeat:
            key = len(ids)
            ids.append(f"{run}-{key:08d}")
            topic_of.append(names[rng.randrange(topics)])
            stamp = _stamp(base + timedelta(milliseconds=key))
            payload = {"message": f"stress event {key} of run {run}", "timestamp": stamp, "seq": key}
            event = {"event_id": ids[key], "topic": topic_of[key], "source": SOURCE, "payload": payload}
            event["timestamp"] = stamp
            encoded.append(orjson.dumps(event))
            new_in_batch.append(key)
        elif new_in_batch and rng.random() < 0.5:
            # A repeat inside one request: the server must drop it within the same transaction.
            key = rng.choice(new_in_batch)
        else:
            # A repeat of any earlier event, usually one committed by an earlier request.
            key = rng.randrange(len(ids))
        keys.append(key)
        if len(keys) == batch_size:
            batches.append(Batch(b'{"events":[' + b",".join([encoded[k] for k in keys]) + b"]}", keys))
            keys, new_in_batch = [], []
    if keys:
        batches.append(Batch(b'{"events":[' + b",".join([encoded[k] for k in keys]) + b"]}", keys))
    return Plan(batches, ids, topic_of, repeats)
