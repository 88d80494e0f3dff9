"""Every server's /openapi.json describes what it does: schemathesis finds no check failure against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.openapi_fuzz import SERVERS, fuzz

# Examples per operation: enough to reach every documented status and field, few enough for CI (~15 s a
# server on two cores). `make fuzz` runs many more.
MAX_EXAMPLES = 25


@pytest.mark.timeout(240)
@pytest.mark.parametrize("server", SERVERS)
def test_schemathesis_finds_nothing(server: str, tmp_path: Path) -> None:
    done = fuzz(server, MAX_EXAMPLES, tmp_path)
    assert done.returncode == 0, f"schemathesis found failures on {server}:\n{done.stdout}\n{done.stderr}"
