"""tests/ha/report.py: the fault report's numbers, its markdown, and the section of docs/ha.md it replaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ha import report
from tests.ha.load import Outcome, percentile, phases


def test_phases_split_requests_by_when_they_started() -> None:
    outcomes = [Outcome(0.0, 0.01), Outcome(1.0, 0.5, "HTTP 503"), Outcome(2.0, 0.02), Outcome(3.0, 0.03)]
    split = phases(outcomes, fault_at=1.0, recovered_at=2.5)
    assert [split[p]["sent"] for p in ("before", "during", "after")] == [1, 2, 1]
    assert split["during"]["failed"] == 1 and split["during"]["p99_ms"] == 500.0
    assert percentile([], 50) == 0.0 and percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_the_report_replaces_only_its_section_and_needs_its_markers() -> None:
    doc = f"# HA\n\nbefore\n\n## Last fault report\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n"
    new = report.replace_section(doc, "| fault |\n")
    assert (
        new == f"# HA\n\nbefore\n\n## Last fault report\n\n{report.BEGIN}\n| fault |\n{report.END}\n\nafter\n"
    )
    with pytest.raises(ValueError, match="section"):
        report.replace_section("# HA\n", "x")


def test_docs_are_written_only_after_every_fault_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "ha.md"
    doc.write_text(f"{report.BEGIN}\nold\n{report.END}\n")
    monkeypatch.setattr(report, "RECORDS", [])
    assert report.write(passed=True, results=tmp_path / "results", doc=doc) is None
    outcomes = [Outcome(float(i), 0.01) for i in range(10)]
    report.record("gateway SIGKILL", "48 clients", outcomes, 3.0, 6.0, "HAProxy UP again", streams="2 cut")
    written = report.write(passed=True, results=tmp_path / "results", doc=doc)
    assert written is not None and "| gateway SIGKILL | 48 clients | 10 | 0 |" in written.read_text()
    assert "old" in doc.read_text()  # one fault is not every fault
    for fault in report.FAULTS:
        report.record(fault, "load", outcomes, 3.0, 6.0, "recovered")
    report.write(passed=False, results=tmp_path / "results", doc=doc)
    assert "old" in doc.read_text()  # a failing run keeps the last report
    report.write(passed=True, results=tmp_path / "results", doc=doc)
    assert "old" not in doc.read_text() and "| redis-master SIGKILL | load | 10 | 0 |" in doc.read_text()
    assert (tmp_path / "results" / "ha-report.json").exists()
