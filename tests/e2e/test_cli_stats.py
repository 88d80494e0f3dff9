"""`llmkit stats` as a user and a CI script run it, against a real server on port 0 and a dead port."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app
from llmkit.settings import SECTIONS
from tests.serve_process import ServerProcess
from tests.servers import free_port

LLMKIT = str(Path(sys.executable).with_name("llmkit"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running test server that has answered one request already (so its counters are not zero)."""
    with ServerProcess(tmp_path, "--port", "0") as process:
        url = process.wait_listening()
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.status == 200
        yield process


def run_stats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLMKIT, "stats", *args], capture_output=True, text=True, timeout=60, check=False)


def test_once_json_reports_a_running_server(server: ServerProcess) -> None:
    done = run_stats(server.url, "--once", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["url"] == server.url
    assert row["up"] is True
    assert row["error"] is None
    assert row["health"]["status"] == "ok"
    assert row["health"]["service"] == "serve-test"
    assert row["stats"]["demo"] == {"slow_started": 0, "slow_done": 0}
    assert row["stats"]["http"]["requests"] >= 1
    assert row["requests_total"] >= 1


def test_once_json_reports_a_dead_port_and_exits_1() -> None:
    port = free_port()
    done = run_stats(f"127.0.0.1:{port}", "--once", "--json", "--timeout", "5")
    assert done.returncode == 1
    [row] = json.loads(done.stdout)
    assert row == {
        "url": f"http://127.0.0.1:{port}",
        "up": False,
        "health": None,
        "stats": None,
        "requests_total": None,
        "error": f"cannot connect to 127.0.0.1:{port}: Connection refused",
    }


def test_one_server_down_among_several_exits_1(server: ServerProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_stats(server.url, dead, "--json")  # --json alone takes one snapshot too
    assert done.returncode == 1
    rows = json.loads(done.stdout)
    assert [(row["url"], row["up"]) for row in rows] == [(server.url, True), (dead, False)]


def test_once_prints_a_table(server: ServerProcess) -> None:
    result = CliRunner().invoke(app, ["stats", server.url, "--once"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "llmkit servers" in result.output
    assert server.url in result.output
    assert "serve-test" in result.output
    assert " up " in result.output
    assert "demo.slow_started=0" in result.output


def test_once_table_marks_a_dead_server_down_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["stats", url, "--once"], env={"COLUMNS": "160"})
    assert result.exit_code == 1
    assert url in result.output
    assert "down" in result.output
    assert "Connection refused" in result.output


def test_live_view_on_a_terminal_refreshes_until_ctrl_c(server: ServerProcess) -> None:
    # A pseudo-terminal on stdout: the live table, as a person at a terminal sees it.
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    watcher = subprocess.Popen(
        [LLMKIT, "stats", server.url, "--interval", "0.1"], stdout=follower, stderr=subprocess.PIPE, env=env
    )
    os.close(follower)
    out = b""
    try:
        # Two reads of /stats in the server's access log prove the view refreshed at least once.
        while server.stderr.count("GET /stats 200") < 2:
            assert watcher.poll() is None, watcher.stderr.read() if watcher.stderr else ""
            time.sleep(0.05)
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=60)
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
        os.close(leader)
    assert watcher.returncode == 0, err
    assert server.url in out.decode()
    assert "Ctrl-C to stop" in out.decode()


def test_help_has_examples() -> None:
    result = CliRunner().invoke(app, ["stats", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "--once" in result.output and "--json" in result.output and "--interval" in result.output
    assert "llmkit stats http://127.0.0.1:4545 --once --json" in result.output


def test_without_urls_it_watches_the_profiles_servers(server: ServerProcess, tmp_path: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    profile = tmp_path / "watch.yml"
    # Every server the profile configures is watched; both on one port make one row.
    servers = [name for name, cls in SECTIONS.items() if "port" in {f.name for f in dataclasses.fields(cls)}]
    ports = "".join(f"{section}:\n  port: {port}\n" for section in servers)
    profile.write_text(f"server:\n  host: 0.0.0.0\n{ports}")
    done = run_stats("--profile", str(profile), "--once", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["url"] == f"http://127.0.0.1:{port}"
    assert row["up"] is True


@pytest.fixture(scope="module")
def every_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real process of every llmkit server kind: {command: url}."""
    tmp = tmp_path_factory.mktemp("kinds")
    quiet = {
        "LLMKIT_SERVER_ACCESS_LOG": "false",
        "LLMKIT_SIMULATE_TTFT_MS": "0",
        "LLMKIT_SIMULATE_ITL_MS": "0",
    }
    with ServerProcess(tmp, "--port", "0", command="simulate", env=quiet) as sim:
        sim_url = sim.wait_listening()
        gateway_args = ("--port", "0", "--upstream", sim_url)
        store = f"sqlite:///{tmp / 'events.db'}"
        with (
            ServerProcess(tmp, *gateway_args, command="gateway", env=quiet) as gateway,
            ServerProcess(tmp, "--port", "0", "--backend", "echo", command="orchestrate", env=quiet) as orch,
            ServerProcess(tmp, "--port", "0", "--store", store, command="aggregate", env=quiet) as agg,
        ):
            urls = {
                "simulate": sim_url,
                "gateway": gateway.wait_listening(),
                "orchestrate": orch.wait_listening(),
                "aggregate": agg.wait_listening(),
            }
            for url in urls.values():  # one request each, so that every request counter is above zero
                with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
                    assert response.status == 200
            yield urls


@pytest.mark.parametrize("kind", ["simulate", "gateway", "orchestrate", "aggregate"])
def test_once_json_says_every_server_kind_is_up(every_server: dict[str, str], kind: str) -> None:
    # The gateway and the orchestrator answer the seed's "healthy", the aggregator its "message":
    # any 2xx /health is up.
    done = run_stats(every_server[kind], "--once", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = json.loads(done.stdout)
    assert row["up"] is True
    assert row["error"] is None
    assert row["stats"] is not None
    assert row["requests_total"] >= 1


def test_all_server_kinds_at_once_exit_0(every_server: dict[str, str]) -> None:
    done = run_stats(*every_server.values(), "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    for url in every_server.values():
        assert url in done.stdout


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    """/health answers 503 with a reason; /stats and /metrics answer."""

    def do_GET(self) -> None:
        code, body = (503, b'{"status": "unhealthy"}') if self.path == "/health" else (200, b"{}")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_503_health_is_down_with_its_reason() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = run_stats(f"http://127.0.0.1:{server.server_address[1]}", "--once", "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    [row] = json.loads(done.stdout)
    assert row["up"] is False
    assert row["health"] == {"status": "unhealthy"}
    assert row["error"] == "/health answered HTTP 503 (status 'unhealthy')"


def test_piped_live_view_prints_a_plain_line_per_interval(server: ServerProcess) -> None:
    watcher = subprocess.Popen(
        [LLMKIT, "stats", server.url, "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline().decode() for _ in range(3)]
        watcher.send_signal(signal.SIGINT)
        watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    for line in lines:
        clock, url, state, *fields = line.split()
        assert re.fullmatch(r"\d\d:\d\d:\d\d", clock)
        assert (url, state) == (server.url, "up")
        assert "service=serve-test" in fields
        assert "demo.slow_started=0" in fields
    assert not any("\x1b[" in line for line in lines)  # no terminal control codes in a pipe


def test_cluster_sums_the_replicas_and_says_how_many_are_up(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--port", "0") as one, ServerProcess(tmp_path, "--port", "0") as two:
        urls = [one.wait_listening(), two.wait_listening()]
        done = run_stats("--cluster", *urls, "--once", "--json")
        assert done.returncode == 0, done.stderr
        cluster, *replicas = json.loads(done.stdout)
        assert [row["url"] for row in replicas] == urls
        assert (cluster["replicas_up"], cluster["replicas"], cluster["health"]["status"]) == (2, 2, "ok")
        assert cluster["requests_total"] == sum(row["requests_total"] for row in replicas)
        assert cluster["stats"]["http.requests"] == sum(row["stats"]["http"]["requests"] for row in replicas)
        assert not any("pid" in name or "uptime" in name for name in cluster["stats"])

        dead = f"http://127.0.0.1:{free_port()}"
        down = run_stats("--cluster", *urls, dead, "--once", "--json")
        assert down.returncode == 1
        cluster = json.loads(down.stdout)[0]
        assert (cluster["replicas_up"], cluster["health"]["status"]) == (2, "degraded")
        assert dead in cluster["error"]
        table = run_stats("--cluster", *urls, dead, "--once")
        assert "cluster of 3" in table.stdout and "2 of 3 up" in table.stdout and "degraded" in table.stdout


@pytest.mark.parametrize(
    ("name", "summed"),
    [
        ("http.requests", True),
        ("cache.entries", True),
        ("cache.hit_rate", False),
        ("simulate.tokens_generated", True),
        ("latency_ms.p99", False),
        ("queue.mean_wait_ms", False),
        ("pid", False),
        ("uptime", False),
    ],
)
def test_only_counts_and_sizes_are_summed(name: str, summed: bool) -> None:
    from llmkit.core.figures import summable

    assert summable(name) is summed


HAPROXY_CFG = """
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
    stats show-legends
frontend front
    bind 127.0.0.1:{front}
    default_backend serve_test
backend serve_test
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}
"""


def haproxy_stats_csv(url: str) -> str:
    with urllib.request.urlopen(f"{url};csv", timeout=5) as answer:
        return str(answer.read().decode())


def test_haproxy_finds_the_replicas_of_each_backend(tmp_path: Path) -> None:
    from llmkit.core.haproxy_stats import balanced_servers
    from tests.servers import find_binary

    with ServerProcess(tmp_path, "--port", "0") as one, ServerProcess(tmp_path, "--port", "0") as two:
        urls = [one.wait_listening(), two.wait_listening()]
        stats_port, front_port = free_port(), free_port()
        servers = "\n".join(
            f"    server r{i} {url.removeprefix('http://')} check" for i, url in enumerate(urls, start=1)
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CFG.format(stats=stats_port, front=front_port, servers=servers))
        proxy = subprocess.Popen([find_binary("haproxy"), "-f", str(config)], stderr=subprocess.PIPE)
        stats_url = f"http://127.0.0.1:{stats_port}/stats"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    text = haproxy_stats_csv(stats_url)
                    if sum(server.passing for server in balanced_servers(text)) == 2:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            done = run_stats("--haproxy", stats_url, "--once", "--json")
            assert done.returncode == 0, done.stderr
            cluster, *replicas = json.loads(done.stdout)
            assert cluster["backend"] == "serve_test" and (cluster["replicas_up"], cluster["replicas"]) == (
                2,
                2,
            )
            assert sorted(row["url"] for row in replicas) == sorted(urls)
            assert all(row["haproxy"] == "UP" and row["backend"] == "serve_test" for row in replicas)
            table = run_stats("--haproxy", stats_url, "--once")
            assert "serve_test (cluster of 2)" in table.stdout and f"HAProxy: {stats_url}" in table.stdout

            two.close()  # a replica goes away: HAProxy marks it DOWN, stats says so and exits 1
            while time.monotonic() < deadline:
                if [s.status for s in balanced_servers(haproxy_stats_csv(stats_url))] == ["UP", "DOWN"]:
                    break
                time.sleep(0.1)
            down = run_stats("--haproxy", stats_url, "--once", "--json")
            assert down.returncode == 1
            cluster, *replicas = json.loads(down.stdout)
            assert (cluster["replicas_up"], cluster["health"]["status"]) == (1, "degraded")
            assert {row["url"]: row["haproxy"] for row in replicas} == {urls[0]: "UP", urls[1]: "DOWN"}
        finally:
            proxy.terminate()
            proxy.communicate(timeout=10)


def test_haproxy_and_urls_together_are_a_usage_error() -> None:
    done = run_stats("--haproxy", "http://127.0.0.1:1/stats", "http://127.0.0.1:2", "--once")
    assert done.returncode == 2 and "not both" in done.stderr


def test_an_unreachable_haproxy_page_is_a_one_line_error() -> None:
    done = run_stats("--haproxy", f"http://127.0.0.1:{free_port()}/stats", "--once", "--timeout", "1")
    assert done.returncode == 1
    assert (
        done.stderr.startswith("llmkit: cannot read HAProxy's stats page") and "Traceback" not in done.stderr
    )
