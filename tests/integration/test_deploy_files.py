"""`deploy/` is checked although no container engine runs here: HAProxy's own parser reads haproxy.cfg,
compose.yaml's services, dependencies, images and llmkit command lines are checked against the real CLI
and settings, and the Dockerfile copies what exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from llmkit.cli.main import app
from llmkit.errors import ConfigError
from llmkit.localcluster import haproxy as haproxy_config
from llmkit.settings import load_settings
from tests.servers import find_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_haproxy_accepts_its_config(tmp_path: Path) -> None:
    haproxy = find_binary("haproxy", "/usr/sbin/haproxy")
    done = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_haproxy_cfg_is_the_render_of_its_template() -> None:
    rendered = haproxy_config.docker_config(haproxy_config.TEMPLATE.read_text())
    assert (DEPLOY / "haproxy.cfg").read_text() == rendered, (
        "deploy/haproxy.cfg differs from its template: "
        "run scripts/ha-local.sh haproxy-config > deploy/haproxy.cfg"
    )


def test_haproxy_accepts_the_local_render(tmp_path: Path) -> None:
    haproxy = find_binary("haproxy", "/usr/sbin/haproxy")
    ports = iter(range(20001, 20100))
    fronts = {name: next(ports) for name in (*haproxy_config.SERVICES, "stats")}
    servers = {name: [next(ports) for _ in range(3)] for name in haproxy_config.SERVICES}
    config = haproxy_config.local_config(haproxy_config.TEMPLATE.read_text(), fronts, servers)
    (tmp_path / "haproxy.cfg").write_text(config)
    done = subprocess.run(
        [haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every server is checked on /health, and a request to a dead one goes elsewhere.
    for service, ports_of in servers.items():
        for i, port in enumerate(ports_of, start=1):
            assert f"server {haproxy_config.server_name(service, i)} 127.0.0.1:{port} check" in config
        assert f"bind 127.0.0.1:{fronts[service]}" in config
    for line in (
        "option httpchk GET /health",
        "http-check expect status 200",
        "default-server inter 1s fall 2 rise 2",
        "retry-on conn-failure empty-response response-timeout 503",
        "option redispatch",
        "retries 3",
        "stats uri /stats",
    ):
        assert re.search(rf"^\s+{re.escape(line)}$", config, re.M), line
    directives = [line.split()[0] for line in config.splitlines() if line.strip() and line[0] != "#"]
    assert "resolvers" not in directives and "server-template" not in directives


def test_haproxy_template_names_every_value() -> None:
    with pytest.raises(ConfigError, match="no value for @@servers gateway@@"):
        haproxy_config.render("backend gateway\n    @@servers gateway@@\n", {})


def test_haproxy_backends_name_compose_services_on_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # server-template <prefix> <count> <service>:<port>: the service, its replica count and its --port.
    found = re.findall(r"server-template \S+ (\d+) (\S+):(\d+)", (DEPLOY / "haproxy.cfg").read_text())
    assert found
    for count, service, port in found:
        assert service in services, f"haproxy.cfg names {service!r}, which compose.yaml does not define"
        spec = services[service]
        assert spec.get("deploy", {}).get("replicas", 1) == int(count)
        command = spec["command"]
        assert command[command.index("--port") + 1] == port


def test_every_dependency_and_build_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        depends = spec.get("depends_on", [])
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in services, f"{name} depends on {other!r}, which is not a service"
        build = spec.get("build")
        if build is not None:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
    named = set(compose.get("volumes") or {})
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") and (DEPLOY / source).exists() or source in named, (name, volume)


def test_the_dockerfile_copies_what_exists() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), (
                    f"the Dockerfile copies {source}, which is not in the repository"
                )


def llmkit_commands(compose: dict[str, Any]) -> list[tuple[str, list[str], dict[str, str]]]:
    out = []
    for name, spec in compose["services"].items():
        command = spec.get("command")
        if isinstance(command, list) and command[:1] == ["llmkit"]:
            out.append((name, [str(part) for part in command[1:]], spec.get("environment", {})))
    return out


def test_every_llmkit_command_line_parses(compose: dict[str, Any]) -> None:
    # The CLI's own parser, without running anything: an unknown option or a bad value fails here.
    cli = typer.main.get_command(app)
    commands = llmkit_commands(compose)
    assert {name for name, _, _ in commands} >= {"simulate", "aggregate", "orchestrate", "gateway"}
    for name, args, _ in commands:
        with cli.make_context("llmkit", list(args), resilient_parsing=False) as ctx:
            sub = cli.get_command(ctx, args[0])  # type: ignore[attr-defined]
            assert sub is not None, f"{name}: llmkit has no command {args[0]!r}"
            with sub.make_context(args[0], args[1:], parent=ctx):
                pass


def test_every_llmkit_variable_and_profile_is_known(compose: dict[str, Any]) -> None:
    for name, args, environment in llmkit_commands(compose):
        profile = args[args.index("--profile") + 1] if "--profile" in args else None
        if profile is not None:
            assert (ROOT / "profiles" / f"{profile}.yml").is_file(), f"{name}: no profile {profile!r}"
        # ${VAR:?message} values come from the shell running compose: any value of the right kind will do.
        env = {
            key: "compose-check-value-0123456789abcdef" if "${" in str(value) else str(value)
            for key, value in environment.items()
            if key.startswith("LLMKIT_")
        }
        load_settings(profile, env=env)  # an unknown LLMKIT_ variable or a bad value raises


def test_compose_describes_the_ha_topology(compose: dict[str, Any]) -> None:
    # The same processes as scripts/ha-local.sh up: what tests/ha prove on one machine.
    services = compose["services"]
    replicas = {name: spec.get("deploy", {}).get("replicas", 1) for name, spec in services.items()}
    expected = {
        "haproxy": 1,
        "redis-master": 1,
        "redis-replica": 1,
        "sentinel-1": 1,
        "sentinel-2": 1,
        "sentinel-3": 1,
        "postgres": 1,
        "clickhouse": 1,
        "simulate": 3,
        "gateway": 3,
        "orchestrate": 3,
        "orchestrate-worker": 2,
        "aggregate": 1,
    }
    assert {name: replicas[name] for name in expected if name in replicas} == expected
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis-master", "6379"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = " ".join(services[name]["command"])
        assert "sentinel monitor mymaster redis-master 6379 2" in script and "redis-sentinel" in script
    # Only HAProxy is reachable from outside: every front and its stats page.
    published = {name for name, spec in services.items() if spec.get("ports")}
    assert published == {"haproxy"}
    assert {int(port.split(":")[0]) for port in services["haproxy"]["ports"]} == {
        *(port for _, port in haproxy_config.SERVICES.values()),
        haproxy_config.STATS_PORT,
    }
    roles = {}
    servers = [(n, a, e) for n, a, e in llmkit_commands(compose) if a[0] != "publish"]  # publish: a client
    assert len(servers) == 6  # init-db, simulate, gateway, orchestrate (api and worker), aggregate
    for name, args, environment in servers:
        assert args[args.index("--profile") + 1] == "ha", name
        if args[0] == "orchestrate":
            roles[name] = args[args.index("--role") + 1]
        # Every Redis user goes through the Sentinels, never to one server.
        for key in ("LLMKIT_CACHE_URL", "LLMKIT_LIMITER_URL", "LLMKIT_QUEUE_URL"):
            url = str(environment.get(key, ""))
            assert "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/mymaster/" in url, (
                name,
                key,
            )
        assert "@postgres:5432/" in str(environment.get("LLMKIT_GATEWAY_PLATFORM_URL")), name
    assert roles == {"orchestrate": "api", "orchestrate-worker": "worker"}
    gateway = services["gateway"]["command"]
    assert gateway[gateway.index("--upstream") + 1] == "http://haproxy:4545"  # the simulators, balanced


def test_every_llmkit_server_in_compose_has_a_healthcheck_on_its_port(compose: dict[str, Any]) -> None:
    for name, args, _ in llmkit_commands(compose):
        if "--port" in args:
            test = " ".join(compose["services"][name]["healthcheck"]["test"])
            assert f"127.0.0.1:{args[args.index('--port') + 1]}/health" in test, name
