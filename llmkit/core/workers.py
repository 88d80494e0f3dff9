"""The workers of one server answer /stats and /metrics for all of them.

With `server.workers` > 1 the supervisor pre-forks workers on one SO_REUSEPORT port, so a client's
/stats lands on one of them at random. Each worker therefore also serves its app on a Unix socket in the
supervisor's private directory (mode 0700: only the server's own user can connect), and the worker that
answers asks every other one for its own figures (`?workers=self`) and adds them up. The caller's
credential goes along, so every worker's guard checks it as usual.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llmkit.core.figures import SETTINGS, summable

# What a worker asks another for: that worker's own figures only (no second round of asking).
SELF = "self"
# Credentials a sibling's guard checks, forwarded as the caller sent them.
_CREDENTIALS = ("Authorization", "X-API-Key", "api-key")
# How long the answering worker waits for the others; one that is slower is reported missing.
PEER_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Peers:
    """This worker's place among the server's workers: slot `slot` of `count`, sockets in `folder`."""

    folder: Path
    slot: int
    count: int

    def socket(self, slot: int) -> Path:
        """The Unix socket worker `slot` serves its app on."""
        return self.folder / f"worker-{slot}.sock"

    async def ask(self, request: web.Request, path: str) -> list[tuple[int, int, bytes]]:
        """(slot, status, body) of `path` from every other worker that answered within PEER_TIMEOUT_S."""
        headers = {name: request.headers[name] for name in _CREDENTIALS if name in request.headers}
        others = [slot for slot in range(self.count) if slot != self.slot]
        answers = await asyncio.gather(*(self._ask_one(slot, path, headers) for slot in others))
        return [answer for answer in answers if answer is not None]

    async def _ask_one(
        self, slot: int, path: str, headers: Mapping[str, str]
    ) -> tuple[int, int, bytes] | None:
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        try:
            connector = aiohttp.UnixConnector(path=str(self.socket(slot)))
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(f"http://worker{path}", headers=headers) as answer,
            ):
                return slot, answer.status, await answer.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None  # restarting, or stuck: the answer says how many workers it covers


PEERS_KEY = web.AppKey("llmkit_peers", Peers)
# What `?workers=` takes: SELF, or ALL (the default).
ALL = "all"


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One /stats body for several workers: counts summed, other numbers (ratios, percentiles, means)
    averaged, uptime the longest, a hit_rate recomputed from the summed hits and misses beside it, lists
    of one length merged item by item; text, flags and settings (`config`) as the first part has them."""
    return dict(_merge(parts, ""))


def _merge(parts: list[Any], name: str) -> Any:
    first = parts[0]
    if name in SETTINGS:
        return first
    if isinstance(first, list):
        if all(isinstance(part, list) and len(part) == len(first) for part in parts):
            return [_merge([part[i] for part in parts], name) for i in range(len(first))]
        return first
    if isinstance(first, Mapping):
        keys = list(dict.fromkeys(key for part in parts if isinstance(part, Mapping) for key in part))
        merged = {
            key: _merge([part[key] for part in parts if isinstance(part, Mapping) and key in part], key)
            for key in keys
        }
        hits, misses = merged.get("hits"), merged.get("misses")
        if "hit_rate" in merged and isinstance(hits, int) and isinstance(misses, int):
            merged["hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else 0.0
        return merged
    numbers = [part for part in parts if _number(part)]
    if not _number(first) or len(numbers) != len(parts):
        return first
    if name == "pid":
        return first
    if name.lower().startswith("uptime"):
        return max(numbers)
    if summable(name):
        return sum(numbers)
    mean = statistics.fmean(numbers)
    return (
        round(mean, 4) if all(isinstance(n, float) for n in numbers) or not mean.is_integer() else int(mean)
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Families:
    """A registry's collector that yields the families it was given."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(expositions: list[tuple[int, str]]) -> bytes:
    """Prometheus text of several workers as one exposition: every sample labelled with its worker's slot
    (`worker="0"`), so counters add up with `sum without (worker)`."""
    families: dict[str, Metric] = {}
    for slot, text in expositions:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(slot)}
                merged.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)
