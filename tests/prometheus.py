"""A real Prometheus (Debian's prometheus package) on a free loopback port, for the test session.

Its targets come from a file_sd file in its temporary directory, so one server scrapes whatever servers a
test starts: `scrape(job, url)` adds a target and waits until Prometheus has scraped it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import urlopen

import pytest

from tests.servers import find_binary, free_port

# Short, so a test sees its requests in Prometheus within a few seconds.
SCRAPE_INTERVAL = "1s"


class PrometheusServer:
    """One prometheus with its storage in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.binary = find_binary("prometheus")
        self.port = free_port()
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.targets: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Write the config and start prometheus; return once it says it is ready."""
        self.workdir = Path(tempfile.mkdtemp(prefix="llmkit-prometheus-"))
        self._write_targets()
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [
                {
                    "job_name": "llmkit",
                    "file_sd_configs": [
                        {"files": [str(self.workdir / "targets.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        # JSON is YAML: no YAML writer needed for prometheus.yml.
        (self.workdir / "prometheus.yml").write_text(json.dumps(config))
        with (self.workdir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def scrape(self, job: str, url: str, timeout: float = 30.0) -> None:
        """Add the server at `url` as a target labelled job=`job`; return once Prometheus scraped it."""
        self.targets.setdefault(job, []).append(urlsplit(url).netloc)
        self._write_targets()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.query(f'up{{job="{job}"}} == 1')
            if len(found) == len(self.targets[job]):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"prometheus did not scrape {url} within {timeout}s: {self.api('/api/v1/targets')}"
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now (an AssertionError when Prometheus refuses it)."""
        data = self.api("/api/v1/query?" + urlencode({"query": expr}))
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def api(self, path: str) -> dict[str, Any]:
        """The JSON answer of Prometheus' HTTP API at `path` (error answers included)."""
        try:
            with urlopen(self.url + path, timeout=10) as answer:
                body: dict[str, Any] = json.loads(answer.read())
        except URLError as exc:
            body = json.loads(exc.read()) if hasattr(exc, "read") else {"status": "error", "error": str(exc)}
        return body

    def stop(self) -> None:
        """Stop prometheus and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_targets(self) -> None:
        assert self.workdir is not None
        groups = [{"targets": targets, "labels": {"job": job}} for job, targets in self.targets.items()]
        # Written aside and renamed, so Prometheus never reads half a file.
        part = self.workdir / "targets.json.part"
        part.write_text(json.dumps(groups))
        part.replace(self.workdir / "targets.json")

    def _wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {self.proc.returncode}: {self._log_tail()}", pytrace=False
                )
            try:
                with urlopen(self.url + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"prometheus was not ready within {timeout}s: {self._log_tail()}", pytrace=False)

    def _log_tail(self, lines: int = 30) -> str:
        assert self.workdir is not None
        log = self.workdir / "prometheus.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
