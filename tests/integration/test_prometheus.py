"""Prometheus itself scrapes a running gateway and simulator and answers with their series; promtool accepts
the shipped config and alert rules; every series the dashboard and the alerts name is one the servers
export (checked against their real scrape)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus import PrometheusServer
from tests.serve_process import ServerProcess
from tests.servers import find_binary

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "llmkit.json"
QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
# PromQL words that are not series names.
PROMQL_WORDS = {
    "sum", "rate", "by", "without", "max", "min", "avg", "histogram_quantile", "le", "irate", "increase",
    "count", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
# A series selector: a name followed by `{`, `[` or the end of an argument.
SERIES_RE = re.compile(r"(?<![\w:\"$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*[{\[)]|\s*$)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
CHAT_SERIES = 'http_requests_total{{method="POST",route="/api/chat",status="{status}",job="gateway"}}'


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = find_binary("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_config_and_rules() -> None:
    done = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    names = {rule["alert"] for group in alert_groups() for rule in group["rules"]}
    assert {"HighErrorRate", "SlowSearches", "UpstreamCircuitOpen", "QuotaRejections"} <= names


def test_the_error_rate_alert_fires_on_5xx_answers(tmp_path: Path) -> None:
    """promtool's rule unit test: 5xx answers at 1/s fire HighErrorRate after its 5 minutes."""
    tests = {
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": CHAT_SERIES.format(status=502),
                        "values": "0+60x20",
                    },
                    {
                        "series": CHAT_SERIES.format(status=200),
                        "values": "0+600x20",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "HighErrorRate", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "HighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "High error rate detected",
                                    "description": "The gateway answers 1 requests a second with a 5xx "
                                    "status.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(json.dumps(tests))
    done = promtool("test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def alert_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return groups


def shipped_expressions() -> list[str]:
    """Every PromQL expression of the alert rules and the Grafana dashboard."""
    exprs = [rule["expr"] for group in alert_groups() for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return exprs


def series_names(expr: str) -> set[str]:
    """The series an expression selects (label names, functions and keywords left out)."""
    without_labels = re.sub(r"\{[^}]*\}", "{}", expr)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    return {name for name in SERIES_RE.findall(without_groupings) if name not in PROMQL_WORDS}


def exported_names(text: str) -> set[str]:
    """Every series name of a Prometheus exposition: its samples', and those its declared families will
    have (a counter nothing counted yet, such as quota refusals, has its HELP and TYPE but no sample)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A simulator with a time to first token and an inter-token latency, so its timings are real."""
    tmp = tmp_path_factory.mktemp("sim")
    args = ("--port", "0", "--ttft-ms", "30", "--itl-ms", "2")
    with ServerProcess(tmp, *args, command="simulate", env=QUIET) as sim:
        sim.wait_listening()
        yield sim


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, simulator: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway in front of the simulator's Ollama API."""
    tmp = tmp_path_factory.mktemp("gw")
    args = ("--port", "0", "--upstream", simulator.url)
    with ServerProcess(tmp, *args, command="gateway", env=QUIET) as gw:
        gw.wait_listening()
        yield gw


def chat(text: str, stream: bool = False) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "stream": stream}


async def test_prometheus_reads_the_gateway_and_simulator_series(
    prometheus_server: PrometheusServer, gateway: ServerProcess, simulator: ServerProcess
) -> None:
    async with aiohttp.ClientSession() as client:
        for i in range(3):
            async with client.post(f"{gateway.url}/v1/chat/completions", json=chat(f"metrics {i}")) as answer:
                assert answer.status == 200, await answer.text()
        async with client.post(f"{gateway.url}/v1/chat/completions", json=chat("metrics 0")) as answer:
            assert answer.headers["X-Gateway-Cache"] == "hit"
        direct = {**chat("direct", stream=True), "model": "m"}
        async with client.post(f"{simulator.url}/v1/chat/completions", json=direct) as answer:
            assert answer.status == 200 and "[DONE]" in await answer.text()
        async with client.post(f"{gateway.url}/api/search", json={"query": "cats"}) as answer:
            assert answer.status == 200, await answer.text()
        async with client.get(f"{gateway.url}/metrics") as answer:
            gateway_text = await answer.text()
        async with client.get(f"{simulator.url}/metrics") as answer:
            simulator_text = await answer.text()

    prometheus_server.scrape("gateway", gateway.url)
    prometheus_server.scrape("simulate", simulator.url)

    chats = wait_for(
        prometheus_server,
        'sum(http_requests_total{job="gateway",route="/v1/chat/completions",status="200"})',
        4,
    )
    assert chats == 4
    by_answer = {
        row["metric"]["answered_by"]: float(row["value"][1])
        for row in prometheus_server.query('llmkit_gateway_chat_requests_total{job="gateway"}')
    }
    assert by_answer["cache"] == 1 and by_answer["upstream"] == 3, by_answer
    # The gateway counted the upstream's tokens, as the simulator counted what it generated.
    generated = wait_for(prometheus_server, 'sum(vllm:generation_tokens_total{job="simulate"})', 1)
    completion = prometheus_server.query('llmkit_gateway_tokens_total{job="gateway",kind="completion"}')
    assert 0 < float(completion[0]["value"][1]) < generated
    # One streamed request straight to the simulator: its time to first token is at least the 30 ms set.
    ttft = prometheus_server.query(
        'vllm:time_to_first_token_seconds_sum{job="simulate"} / vllm:time_to_first_token_seconds_count'
    )
    assert ttft and float(ttft[0]["value"][1]) >= 0.03, ttft
    e2e = prometheus_server.query('sum(vllm:e2e_request_latency_seconds_count{job="simulate"})')
    assert float(e2e[0]["value"][1]) == 4  # three upstream calls from the gateway, one direct
    searches = prometheus_server.query('sum(search_duration_seconds_count{job="gateway"})')
    assert float(searches[0]["value"][1]) == 1
    assert prometheus_server.query('llmkit_gateway_upstream_open{job="gateway"} == 0')

    # Every series the dashboard and the alerts read is one these servers export.
    exported = exported_names(gateway_text) | exported_names(simulator_text)
    for expr in shipped_expressions():
        names = series_names(expr)
        assert names, expr
        missing = {name for name in names if name not in exported}
        assert not missing, f"{expr!r} names series nobody exports: {sorted(missing)}"
        prometheus_server.query(expr)  # and Prometheus accepts it


def wait_for(prometheus: PrometheusServer, expr: str, at_least: float, timeout: float = 30.0) -> float:
    """The value of the one-sample `expr` once it reaches `at_least` (scrapes run every second)."""
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        result = prometheus.query(expr)
        value = float(result[0]["value"][1]) if result else 0.0
        if value >= at_least:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{expr} stayed at {value} (wanted {at_least}) for {timeout}s")


def test_series_names_reads_selectors() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, type) (rate(search_duration_seconds_bucket{a="b"}[5m])))'
    assert series_names(expr) == {"search_duration_seconds_bucket"}
    assert series_names("sum(vllm:num_requests_running)") == {"vllm:num_requests_running"}
    assert series_names("max by (upstream) (llmkit_gateway_upstream_open) > 0") == {
        "llmkit_gateway_upstream_open"
    }
