"""HAProxy's stats page as data: which servers each backend balances over, and how HAProxy sees them."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

# Rows of the CSV that describe a proxy as a whole, not one of its servers.
_AGGREGATES = frozenset({"FRONTEND", "BACKEND"})


@dataclass(frozen=True)
class BalancedServer:
    """One server of a backend: its base URL and HAProxy's status for it (UP, DOWN, MAINT, ...)."""

    backend: str
    name: str
    url: str
    status: str
    check: str

    @property
    def passing(self) -> bool:
        """HAProxy calls it UP and its last check passed (a server starts UP before any check)."""
        return self.status == "UP" and self.check == "L7OK"


def csv_url(stats_url: str) -> str:
    """The CSV export of a stats page: `http://host:8404/stats` -> `http://host:8404/stats;csv`."""
    base = stats_url.rstrip("/")
    return base if base.endswith(";csv") else f"{base};csv"


def stats_rows(text: str) -> list[dict[str, str]]:
    """The rows of HAProxy's stats CSV (its header line starts with "# ")."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def balanced_servers(text: str) -> list[BalancedServer]:
    """Every server of every backend in a stats CSV, in the order HAProxy lists them."""
    servers = []
    for row in stats_rows(text):
        name, address = row.get("svname", ""), row.get("addr", "")
        if name in _AGGREGATES or not address:
            continue
        servers.append(
            BalancedServer(
                backend=row.get("pxname", ""),
                name=name,
                url=f"http://{address}",
                status=row.get("status", ""),
                check=row.get("check_status", ""),
            )
        )
    return servers
