"""A served process's access log: every request once, in its own line, while it runs and when it stops."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serve_process import ServerProcess

LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO llmkit\.access pid=(?P<pid>\d+) \[(?P<rid>[^\]]+)\] "
    r"GET /health 200 \d+\.\dms"
)


def get(url: str, request_id: str) -> int:
    request = urllib.request.Request(url, headers={"X-Request-ID": request_id})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def access_ids(stderr: str) -> list[str]:
    return [m["rid"] for m in map(LINE.fullmatch, stderr.splitlines()) if m is not None]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_is_logged_once_soon_after_and_the_last_ones_at_exit(
    tmp_path: Path, workers: int
) -> None:
    env = {"LLMKIT_SERVER_ACCESS_LOG": "true", "LLMKIT_SERVER_WORKERS": str(workers)}
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=env) as server:
        url = server.wait_listening()
        assert get(f"{url}/health", "early-0") == 200
        # Written within a moment while the server runs, without waiting for more requests.
        deadline = time.monotonic() + 10
        while "early-0" not in access_ids(server.stderr):
            assert time.monotonic() < deadline, server.stderr[-2000:]
            time.sleep(0.05)
        ids = [f"req-{i}" for i in range(300)]
        for rid in ids:
            assert get(f"{url}/health", rid) == 200
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        logged = access_ids(server.stderr)
    # The requests sent just before SIGTERM are there too, each exactly once, and no line was cut.
    assert sorted(logged) == sorted(["early-0", *ids])
    assert all(LINE.fullmatch(line) for line in server.stderr.splitlines() if "llmkit.access" in line), (
        server.stderr[-2000:]
    )
