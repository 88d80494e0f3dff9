"""Seed 002's tracing variables for every server command, through `llmkit config show --for COMMAND`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app
from llmkit.core.telemetry import traces_url

SERVERS = ["gateway", "simulate", "orchestrate", "aggregate"]
SEED = {
    "TELEMETRY_ENABLED": "true",
    "OTLP_ENDPOINT": "http://collector:4318",
    "SAMPLING_RATE": "0.1",
    "SERVICE_NAME": "rustassistant",
    "ENVIRONMENT": "production",
}
EXPECTED = {
    "telemetry.enabled": ("TELEMETRY_ENABLED", True),
    "telemetry.otlp_endpoint": ("OTLP_ENDPOINT", "http://collector:4318"),
    "telemetry.sampling_rate": ("SAMPLING_RATE", 0.1),
    "telemetry.service_name": ("SERVICE_NAME", "rustassistant"),
    "telemetry.environment": ("ENVIRONMENT", "production"),
}


def show(command: str, env: dict[str, str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["config", "show", "--for", command, "--json"], env=env)
    assert result.exit_code == 0, result.output
    settings: dict[str, Any] = json.loads(result.stdout)["settings"]
    return settings


@pytest.mark.parametrize("command", SERVERS)
def test_every_server_takes_the_seed_variables_and_says_where_they_came_from(command: str) -> None:
    settings = show(command, SEED)
    for dotted, (name, value) in EXPECTED.items():
        assert settings[dotted] == {"value": value, "origin": f"env {name}"}


@pytest.mark.parametrize("command", SERVERS)
def test_llmkit_telemetry_variables_win_over_the_seed_ones(command: str) -> None:
    env = {**SEED, "LLMKIT_TELEMETRY_SAMPLING_RATE": "0.5", "LLMKIT_TELEMETRY_ENABLED": "false"}
    settings = show(command, env)
    assert settings["telemetry.sampling_rate"] == {
        "value": 0.5,
        "origin": "env LLMKIT_TELEMETRY_SAMPLING_RATE",
    }
    assert settings["telemetry.enabled"]["value"] is False


def test_tracing_is_off_by_default() -> None:
    settings = show("gateway", {})
    assert settings["telemetry.enabled"] == {"value": False, "origin": "default"}
    assert settings["telemetry.capture_content"]["value"] is False


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("SAMPLING_RATE", "2", "must be a number from 0 to 1"),
        ("SAMPLING_RATE", "often", "must be a number"),
        ("TELEMETRY_ENABLED", "maybe", "must be true/false"),
        ("OTLP_ENDPOINT", "localhost:4318", "must be an http:// or https:// URL"),
    ],
)
@pytest.mark.parametrize("command", ["gateway", "simulate"])
def test_a_bad_seed_value_exits_2_naming_the_variable(command: str, name: str, text: str, said: str) -> None:
    for args in (["config", "show", "--for", command], [command, "--port", "0"]):
        result = CliRunner().invoke(app, args, env={name: text})
        assert result.exit_code == 2, result.output
        assert f"environment variable {name} {said}" in result.output


def test_a_bad_llmkit_sampling_rate_exits_2_naming_the_setting() -> None:
    result = CliRunner().invoke(app, ["simulate", "--port", "0"], env={"LLMKIT_TELEMETRY_SAMPLING_RATE": "2"})
    assert result.exit_code == 2, result.output
    assert "telemetry.sampling_rate" in result.output


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
        ("https://otel.example/prefix", "https://otel.example/prefix/v1/traces"),
    ],
)
def test_the_endpoint_may_be_given_with_or_without_the_traces_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url
