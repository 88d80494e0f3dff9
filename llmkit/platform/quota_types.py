"""A tenant's quotas: requests and tokens per minute, requests in flight, tokens per day and month."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Quotas:
    """None is no limit; every limit is an integer >= 1."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        """`{"rpm": 60, "tpm": None, ...}`: every quota, in a stable order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quotas:
        """Quotas from a JSON object; a wrong key or value is a ValueError that says what to change."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown quota {', '.join(unknown)}; valid quotas: {', '.join(names)}")
        for name, value in data.items():
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"quota {name} must be an integer >= 1 or null (no limit); got {value!r}")
        return cls(**dict(data))
