"""The fault report: each fault test records its numbers here; at the end of the session they are written to
bench/results/ha-report.{md,json}, and, after a run of every fault that passed, into docs/ha.md."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.ha.load import Outcome, errors, phases

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "ha.md"
BEGIN = "<!-- ha-fault-report:begin (written by make test-ha: tests/ha/report.py) -->"
END = "<!-- ha-fault-report:end -->"
# docs/ha.md keeps the report of a run that had every one of these, all passing.
FAULTS = (
    "gateway SIGTERM",
    "gateway SIGKILL",
    "simulate SIGTERM",
    "simulate SIGKILL",
    "orchestrate-api SIGTERM",
    "orchestrate-api SIGKILL",
    "orchestrate-worker SIGKILL",
    "redis-master SIGKILL",
)
STARTED = time.monotonic()
RECORDS: list[dict[str, Any]] = []


def record(
    fault: str,
    load: str,
    outcomes: list[Outcome],
    fault_at: float,
    recovered_at: float,
    recovered: str,
    **notes: Any,
) -> dict[str, Any]:
    """Keep one fault's numbers for the report (and return them, for the test's own asserts)."""
    row = {
        "fault": fault,
        "load": load,
        "sent": len(outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "phases": phases(outcomes, fault_at, recovered_at),
        "recover_s": round(recovered_at - fault_at, 2),
        "recovered": recovered,
        "errors": errors(outcomes),
        "notes": notes,
    }
    RECORDS.append(row)
    return row


def _cell(phase: dict[str, Any]) -> str:
    if not phase["sent"]:
        return "-"
    failed = f", {phase['failed']} failed" if phase["failed"] else ""
    return f"{phase['p50_ms']:g} / {phase['p99_ms']:g} ({phase['sent']}{failed})"


def markdown(data: dict[str, Any]) -> str:
    """The report as the markdown section of docs/ha.md (no heading)."""
    lines = [
        f"Run of {data['date']} on {data['machine']}; `make test-ha` took {data['session_s']:.0f} s "
        "(cluster starts included). Latencies are p50 / p99 in ms (requests started in the phase); "
        "*during* runs from the fault until the recovery named in the last column.",
        "",
        "| fault | load (through HAProxy) | sent | failed | before | during | after | recovered after |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for row in data["faults"]:
        p = row["phases"]
        pct = f" ({100 * row['failed'] / row['sent']:.3f}%)" if row["failed"] and row["sent"] else ""
        lines.append(
            f"| {row['fault']} | {row['load']} | {row['sent']} | {row['failed']}{pct} | {_cell(p['before'])} "
            f"| {_cell(p['during'])} | {_cell(p['after'])} | {row['recover_s']:g} s: {row['recovered']} |"
        )
    notes = [(row["fault"], row["notes"], row["errors"]) for row in data["faults"]]
    lines.append("")
    for fault, extra, seen in notes:
        parts = [f"{key.replace('_', ' ')}: {value}" for key, value in extra.items()]
        if seen:
            parts.append("errors seen: " + "; ".join(f"`{e[:120]}`" for e in seen))
        if parts:
            lines.append(f"- **{fault}**: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model or platform.machine()}), shared with other work"


def replace_section(doc: str, section: str) -> str:
    """doc with the text between BEGIN and END replaced by section; ValueError without the markers."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/ha.md has no {BEGIN!r} ... {END!r} section")
    return doc[: start + len(BEGIN)] + "\n" + section + doc[end:]


def write(passed: bool, results: Path = RESULTS, doc: Path = DOC) -> Path | None:
    """Write the recorded faults (if any); docs/ha.md too when every fault ran and the session passed."""
    if not RECORDS:
        return None
    data = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "session_s": round(time.monotonic() - STARTED, 1),
        "faults": RECORDS,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "ha-report.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (results / "ha-report.md").write_text("# Last fault report\n\n" + text)
    if passed and {row["fault"] for row in RECORDS} >= set(FAULTS):
        doc.write_text(replace_section(doc.read_text(), text))
    return results / "ha-report.md"
