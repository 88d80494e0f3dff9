"""One HAProxy template, rendered for Docker (compose's DNS) or for local processes on 127.0.0.1."""

from __future__ import annotations

import re
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmkit.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg.in"
# The services behind HAProxy, with the prefix of their server names and their port in compose.
SERVICES: dict[str, tuple[str, int]] = {
    "simulate": ("sim", 4545),
    "gateway": ("gw", 8080),
    "orchestrate": ("orch", 8090),
    "aggregate": ("agg", 8000),
}
STATS_PORT = 8404
MAXCONN = 20000
DOCKER_REPLICAS = {"simulate": 3, "gateway": 3, "orchestrate": 3, "aggregate": 1}
_MARKER = re.compile(r"@@([a-z ]+)@@")


def server_name(service: str, index: int) -> str:
    """The name HAProxy gives the index-th (from 1) server of a service, as server-template does."""
    return f"{SERVICES[service][0]}{index}"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every `@@name@@`: a marker alone on a line takes the line (indented, blank lines dropped)."""
    out: list[str] = []
    for line in template.splitlines():
        whole = _MARKER.fullmatch(line.strip())
        if whole:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + part for part in _value(values, whole.group(1)).splitlines() if part)
        else:
            out.append(_MARKER.sub(lambda m: _value(values, m.group(1)), line))
    return "\n".join(out) + "\n"


def _value(values: Mapping[str, str], name: str) -> str:
    if name not in values:
        raise ConfigError(f"haproxy template: no value for @@{name}@@ (known: {', '.join(sorted(values))})")
    return values[name]


def docker_config(template: str, replicas: Mapping[str, int] = DOCKER_REPLICAS) -> str:
    """deploy/haproxy.cfg: each service's replicas found through Docker's DNS with server-template."""
    values = {
        "global": "",
        "maxconn": str(MAXCONN),
        "resolvers": "resolvers docker\n    nameserver dns 127.0.0.11:53",
        "bind stats": f"*:{STATS_PORT}",
    }
    for service, (prefix, port) in SERVICES.items():
        values[f"bind {service}"] = f"*:{port}"
        values[f"servers {service}"] = (
            f"server-template {prefix} {replicas[service]} {service}:{port} check resolvers docker "
            "init-addr none"
        )
    return render(template, values)


def local_config(
    template: str,
    fronts: Mapping[str, int],
    servers: Mapping[str, Sequence[int]],
    fd_limit: int | None = None,
) -> str:
    """The config of `scripts/ha-local.sh up`: fronts (and `stats`) and servers on 127.0.0.1 ports.

    HAProxy refuses to start when maxconn needs more file descriptors than it may open (`fd_limit`, by
    default this process's hard RLIMIT_NOFILE, which HAProxy inherits)."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = MAXCONN if fd_limit == resource.RLIM_INFINITY else min(MAXCONN, max(256, fd_limit // 2 - 100))
    values = {
        "global": "",
        "maxconn": str(maxconn),
        "resolvers": "",
        "bind stats": f"127.0.0.1:{fronts['stats']}",
    }
    for service in SERVICES:
        values[f"bind {service}"] = f"127.0.0.1:{fronts[service]}"
        values[f"servers {service}"] = "\n".join(
            f"server {server_name(service, i)} 127.0.0.1:{port} check"
            for i, port in enumerate(servers[service], start=1)
        )
    return render(template, values)
