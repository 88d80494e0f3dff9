"""`scripts/ha-local.sh up`: start every process of the local cluster in order, wait until all are healthy."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from llmkit.localcluster import haproxy, services
from llmkit.localcluster.cluster import (
    BEHIND,
    HTTP_ROLES,
    MARKER,
    MODEL,
    ORCHESTRATE_WORKERS,
    PG_DATABASE,
    PG_USER,
    SENTINELS,
    STATE,
    Cluster,
    StartError,
    http_status,
    wait_until,
)
from llmkit.localcluster.processes import (
    Started,
    find_binary,
    free_port,
    log_tail,
    port_open,
    spawn,
    stop_all,
)

INSTALL_HINT = "run scripts/ensure-services.sh (as root it installs it with apt-get) or apt-get install {}"


def binaries() -> dict[str, str]:
    """Every binary the cluster needs; StartError naming the first one missing."""
    wanted = {
        "haproxy": ("haproxy", "/usr/sbin/haproxy"),
        "redis-server": ("redis-server",),
        "redis-sentinel": ("redis-sentinel",),
        "clickhouse-server": services.CLICKHOUSE_BINARIES,
    }
    found: dict[str, str] = {}
    for name, candidates in wanted.items():
        path = find_binary(*candidates)
        if path is None:
            raise StartError(f"{name} is not installed; " + INSTALL_HINT.format(name))
        found[name] = path
    bindir = services.postgres_bindir()
    if bindir is None:
        raise StartError(
            f"PostgreSQL is not installed (no {services.PG_ROOT}/*/bin/initdb); "
            + INSTALL_HINT.format("postgresql")
        )
    found["postgres"] = str(bindir)
    llmkit = Path(sys.executable).with_name("llmkit")
    if not llmkit.exists():
        raise StartError(f"{llmkit} not found; run `make install` in the repository first")
    found["llmkit"] = str(llmkit)
    return found


def prepare(root: Path) -> None:
    """An empty root (made here, or one a previous cluster left with its marker), traversable by postgres."""
    if (root / STATE).exists():
        try:
            alive = [p.name for p in Cluster.load(root).processes if p.alive()]
        except (OSError, ValueError, KeyError, TypeError):
            alive = []
        if alive:
            raise StartError(f"a cluster is running in {root} ({', '.join(alive)}); run `down` first")
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise StartError(f"{root} is not empty and was not made by ha-local; give an empty --dir")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    # The postgres user (when we are root) must reach its data directory below root.
    root.chmod(0o755)
    (root / MARKER).write_text("made by scripts/ha-local.sh up; removed by down\n")
    (root / "logs").mkdir()


def up(root: Path, replicas: int, workers: int, environ: Mapping[str, str]) -> Cluster:
    """Start the cluster in root and wait until every process is healthy, directly and through HAProxy.

    On any failure, what was started is stopped and the StartError propagates."""
    found = binaries()
    prepare(root)
    cluster = Cluster(root)
    try:
        _start(cluster, found, replicas, workers, environ)
    except BaseException:
        stop(cluster)
        (root / STATE).unlink(missing_ok=True)
        raise
    return cluster


def restart(cluster: Cluster, role: str, index: int, environ: Mapping[str, str]) -> Started:
    """Start one llmkit server again as `up` did (stopping it first if it runs); wait until it is healthy,
    and UP in HAProxy when it is behind it. The new process replaces the old one in the state file."""
    if role not in HTTP_ROLES:
        raise StartError(f"restart takes an llmkit server role ({', '.join(HTTP_ROLES)}), not {role!r}")
    old = next((process for process in cluster.of(role) if process.index == index), None)
    if old is None:
        raise StartError(f"no {role}-{index} in {cluster.root} (it has {len(cluster.of(role))} {role})")
    if not old.args or "server_env" not in cluster.info:
        raise StartError(f"{old.name} was started by an older ha-local that did not record how; down and up")
    stop_all([old])
    process = spawn(
        role,
        index,
        old.url,
        old.args,
        Path(old.log),
        env={**environ, **cluster.info["server_env"]},
        cwd=Path(old.cwd) if old.cwd else None,
    )
    cluster.processes[cluster.processes.index(old)] = process
    cluster.save()
    wait_until(f"{process.name} answers /health", partial(cluster.healthy, process), 90, process)
    # Twice, a check interval apart: a check that failed before the start may still be on its way.
    for _ in range(2):
        time.sleep(1.2)
        wait_until(
            f"haproxy sees {process.name} UP", lambda: cluster.status_of(process)["health"] == "up", 30
        )
    return process


def stop(cluster: Cluster) -> list[Started]:
    """Stop the llmkit servers and HAProxy first (they drain), then the stores; what needed SIGKILL."""
    stores = {"redis-master", "redis-replica", "sentinel", "postgres", "clickhouse"}
    first = [p for p in cluster.processes if p.role not in stores]
    killed = stop_all(reversed(first))
    killed += stop_all(reversed([p for p in cluster.processes if p.role in stores]))
    return killed


def _start(
    cluster: Cluster, found: dict[str, str], replicas: int, workers: int, environ: Mapping[str, str]
) -> None:
    root = cluster.root
    taken: set[int] = set()
    fronts = {name: free_port(taken) for name in (*haproxy.SERVICES, "stats")}
    key = environ.get("LLMKIT_GATEWAY_ADMIN_KEY") or secrets.token_urlsafe(32)
    cluster.info = {
        "front": {name: f"http://127.0.0.1:{fronts[name]}" for name in haproxy.SERVICES},
        "haproxy_stats": f"http://127.0.0.1:{fronts['stats']}/stats",
        "admin_key": key,
    }
    cluster.save()
    clickhouse = _clickhouse(cluster, found["clickhouse-server"], taken)
    sentinel_ports = _redis(cluster, found, taken)
    postgres_url = _postgres(cluster, Path(found["postgres"]), taken)
    wait_until(
        "the sentinels know each other and the replica", lambda: services.sentinels_ready(sentinel_ports), 30
    )
    wait_until("clickhouse answers /ping", lambda: cluster.healthy(clickhouse), 60, clickhouse)
    _run_logged(
        [found["llmkit"], "simulate", "init-db", "--profile", "ha", "--sample", "--url", clickhouse.url],
        root / "logs" / "clickhouse-init.log",
        root,
        "loading the simulator's answers into ClickHouse (llmkit simulate init-db)",
    )
    ports = {
        role: [free_port(taken) for _ in range(replicas)]
        for role in ("simulate", "gateway", "orchestrate-api")
    }
    ports["orchestrate-worker"] = [free_port(taken) for _ in range(ORCHESTRATE_WORKERS)]
    ports["aggregate"] = [free_port(taken)]
    servers = {service: ports[role] for role, service in BEHIND.items()}
    config = haproxy.local_config(haproxy.TEMPLATE.read_text(), fronts, servers)
    (root / "haproxy.cfg").write_text(config)
    proxy = cluster.add(
        spawn(
            "haproxy",
            1,
            cluster.info["haproxy_stats"],
            [found["haproxy"], "-db", "-f", str(root / "haproxy.cfg")],
            cluster.log("haproxy", 1),
        )
    )
    wait_until("haproxy listening", lambda: port_open(fronts["stats"]), 20, proxy)

    cluster.info["server_env"] = _server_env(
        cluster, environ, workers, sentinel_ports, clickhouse.url, postgres_url
    )
    cluster.save()
    env = {**environ, **cluster.info["server_env"]}
    commands = {
        "simulate": ["simulate"],
        "gateway": ["gateway"],
        "orchestrate-api": ["orchestrate", "--role", "api"],
        "orchestrate-worker": ["orchestrate", "--role", "worker"],
        "aggregate": ["aggregate"],
    }
    started = []
    for role, command in commands.items():
        for index, port in enumerate(ports[role], start=1):
            args = [found["llmkit"], *command, "--profile", "ha", "--port", str(port)]
            started.append(
                cluster.add(
                    spawn(
                        role,
                        index,
                        f"http://127.0.0.1:{port}",
                        args,
                        cluster.log(role, index),
                        env=env,
                        cwd=root,
                    )
                )
            )
    for server in started:
        wait_until(f"{server.name} answers /health", partial(cluster.healthy, server), 90, server)
    wait_until("haproxy sees every server UP", lambda: all(r["health"] == "up" for r in cluster.health()), 30)
    for name, url in cluster.info["front"].items():
        wait_until(f"{name} through haproxy ({url}/health)", partial(_answers, f"{url}/health"), 10)


def _server_env(
    cluster: Cluster,
    environ: Mapping[str, str],
    workers: int,
    sentinel_ports: list[int],
    ch_url: str,
    postgres_url: str,
) -> dict[str, str]:
    """What every llmkit server has in its environment besides up's own: the caller's `LLMKIT_*` and the
    ha profile's stores replaced by the local ones (kept in the state file, so `restart` starts the same)."""
    sim_front = cluster.info["front"]["simulate"]
    key = cluster.info["admin_key"]
    sentinel = services.sentinel_url(sentinel_ports, 0, "prefix=llmkit")
    return {
        **{name: value for name, value in environ.items() if name.startswith("LLMKIT_")},
        "LLMKIT_SERVER_HOST": "127.0.0.1",
        "LLMKIT_SERVER_WORKERS": str(workers),
        "LLMKIT_CACHE_URL": "tiered+" + sentinel + "&local_max_size_mb=64&local_ttl=5",
        "LLMKIT_LIMITER_URL": sentinel,
        "LLMKIT_QUEUE_URL": sentinel,
        "LLMKIT_CLICKHOUSE_URL": ch_url,
        "LLMKIT_AGGREGATE_STORE": ch_url,
        "LLMKIT_STORAGE_DATA_DIR": str(cluster.root / "data"),
        "LLMKIT_GATEWAY_PLATFORM_URL": postgres_url,
        "LLMKIT_GATEWAY_UPSTREAMS": sim_front,
        "LLMKIT_GATEWAY_ADMIN_KEY": key,
        "LLMKIT_SIMULATE_ADMIN_KEY": environ.get("LLMKIT_SIMULATE_ADMIN_KEY") or key,
        "LLMKIT_ORCHESTRATE_ADMIN_KEY": environ.get("LLMKIT_ORCHESTRATE_ADMIN_KEY") or key,
        "LLMKIT_ORCHESTRATE_BACKEND": "openai",
        "LLMKIT_ORCHESTRATE_BACKEND_URL": f"{sim_front}/v1",
        "LLMKIT_ORCHESTRATE_MODEL": environ.get("LLMKIT_ORCHESTRATE_MODEL") or MODEL,
    }


def _answers(url: str) -> bool:
    return http_status(url) == 200


def _clickhouse(cluster: Cluster, binary: str, taken: set[int]) -> Started:
    """clickhouse-server started (not yet waited for: it takes the longest, the others start meanwhile)."""
    tcp, http = free_port(taken), free_port(taken)
    config = services.write_clickhouse_config(cluster.root / "clickhouse", http, tcp)
    process = spawn(
        "clickhouse",
        1,
        f"clickhouse://127.0.0.1:{tcp}/default",
        [binary, f"--config-file={config}"],
        cluster.log("clickhouse", 1),
        cwd=config.parent,
    )
    process.extra = {"port": tcp, "http_port": http}
    return cluster.add(process)


def _redis(cluster: Cluster, found: dict[str, str], taken: set[int]) -> list[int]:
    """A master, its replica and the sentinels watching them; the sentinels' ports."""
    master_port = free_port(taken)
    for role, port, replica_of in (
        ("redis-master", master_port, None),
        ("redis-replica", free_port(taken), master_port),
    ):
        folder = cluster.root / role
        folder.mkdir()
        args = services.redis_args(found["redis-server"], port, folder, replica_of)
        process = spawn(role, 1, f"redis://127.0.0.1:{port}/0", args, cluster.log(role, 1))
        process.extra = {"port": port}
        cluster.add(process)
        wait_until(f"{process.name} listening on {port}", partial(port_open, port), 20, process)
    ports = [free_port(taken) for _ in range(SENTINELS)]
    for index, port in enumerate(ports, start=1):
        conf = services.write_sentinel_config(cluster.root / f"sentinel-{index}", port, master_port)
        process = spawn(
            "sentinel",
            index,
            f"redis://127.0.0.1:{port}",
            [found["redis-sentinel"], str(conf)],
            cluster.log("sentinel", index),
        )
        process.extra = {"port": port}
        cluster.add(process)
        wait_until(f"{process.name} listening on {port}", partial(port_open, port), 20, process)
    return ports


def _postgres(cluster: Cluster, bindir: Path, taken: set[int]) -> str:
    """PostgreSQL with the database llmkit, its owner llmkit (a password user over TCP); its URL."""
    port = free_port(taken)
    folder = cluster.root / "postgres"
    folder.mkdir()
    password = secrets.token_hex(16)
    services.initdb(bindir, folder / "data", PG_USER, password, folder)
    args = services.postgres_args(bindir, folder / "data", port, folder, max_connections=300)
    process = spawn(
        "postgres",
        1,
        f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}",
        args,
        cluster.log("postgres", 1),
        cwd=folder,
        stop_signal=signal.SIGINT,  # fast shutdown
        **services.postgres_user_args(),
    )
    process.extra = {"port": port, "bindir": str(bindir)}
    cluster.add(process)
    wait_until("postgres accepts connections", lambda: services.postgres_ready(bindir, port), 30, process)
    createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DATABASE]
    _run_logged(
        createdb,
        cluster.log("createdb", 1),
        cluster.root,
        "createdb llmkit",
        env={**os.environ, "PGPASSWORD": password},
    )
    return f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/{PG_DATABASE}"


def _run_logged(
    args: list[str], log: Path, cwd: Path, what: str, env: Mapping[str, str] | None = None
) -> None:
    """Run a one-off step to completion, its output in log; StartError with the tail when it fails."""
    with log.open("wb") as out:
        done = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, check=False, timeout=120
        )
    if done.returncode != 0:
        raise StartError(f"{what} exited with {done.returncode} (log {log}):\n{log_tail(log)}")
