"""Which /stats numbers add up across workers and replicas (kept free of heavy imports: the CLI uses it)."""

from __future__ import annotations

# Numbers that mean nothing summed over workers or replicas: a ratio, a percentile, a mean, a process's
# own figure.
NOT_SUMMED = (
    "rate",
    "ratio",
    "percent",
    "p50",
    "p90",
    "p95",
    "p99",
    "mean",
    "avg",
    "latency",
    "uptime",
    "pid",
)
# Counts whose names hold one of those words all the same.
SUMMED = frozenset({"rate_limited"})
# Sections that describe settings, the same in every worker: the first worker's, never summed.
SETTINGS = frozenset({"config", "settings"})


def summable(name: str) -> bool:
    """Whether a /stats number adds up across workers or replicas (counts, sizes, totals)."""
    leaf = name.rsplit(".", 1)[-1].lower()
    return leaf in SUMMED or not any(word in NOT_SUMMED for word in leaf.split("_"))
