"""The gateway's platform cost: keys on every request, a tenant quota and analytics on, against the same
gateway with auth and analytics off, in front of one `llmkit simulate`, measured in the same run.

Run with `.venv/bin/python bench/gateway_platform.py [--seconds S] [--requests N]` (or `make bench`).
Prints a table, writes bench/results/gateway_platform.json, exits 1 when a target is missed.
Targets (issue 14): c=32 throughput with a key on every request (8 keys of one tenant) and analytics on
(SQLite) >= 0.9x the same gateway without them, for a tenant with rpm and tpm quotas (each answer counts
both and carries their six x-ratelimit-* headers) and for one with an rpm quota only;
c=1 added latency p50 over direct <= 1 ms with them on.

Each gateway runs pinned to the last core, the simulator, wrk and the gateways' analytics writer processes
to the others (`--no-pin`: the scheduler places them). First the variants alternate for `--rounds` rounds
(req/s and CPU per request of each alone). Then, pinned, the figure: for `--rounds` rounds "off" and each
"on" variant are loaded *at the same time* on the one core, so the kernel's fair scheduler splits it and
whatever the machine's speed does during the run hits both alike; the ratio of their req/s is the ratio
of what a request costs each (the core's busy share is printed: ~1.0 means the gateways, not the
simulator, were the limit). On this 2-core VM the speed swings by +-30% within seconds, so alternating
runs give on / off anywhere in 0.8-1.0; side by side, rounds agree to about +-0.015. Unpinned, the figure
is the median of the alternating rounds' pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import MODEL, QUIET, body, pct, simulate_server, wrk, wrk_script  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

ADMIN = "bench-admin-key-0123456789abcdef"
KEYS = 8
ROUTE = "/v1/chat/completions"


def gateway(tmp: Path, upstream: str, platform: bool) -> ServerProcess:
    """One worker in front of the simulator: with keys required and analytics on, or with neither."""
    env = {
        **QUIET,
        "LLMKIT_GATEWAY_UPSTREAM_KIND": "openai",
        "LLMKIT_GATEWAY_UPSTREAMS": upstream,
        "LLMKIT_GATEWAY_MAX_CONCURRENT": "32",
        "LLMKIT_GATEWAY_MAX_QUEUE_SIZE": "10000",
        "LLMKIT_GATEWAY_MODEL": MODEL,
        "LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp}/platform-{platform}.db",
        "LLMKIT_GATEWAY_ANALYTICS_ENABLED": "true" if platform else "false",
        "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true" if platform else "false",
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
    }
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway")


def descendants(pid: int) -> list[int]:
    """The pids of a process's children, and theirs (the analytics writer)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            out += [child, *descendants(child)]
    return out


def affine(pid: int, cores: set[int]) -> None:
    """Run every thread of `pid` on `cores` only."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.sched_setaffinity(int(task.name), cores)


def pin(pid: int, cores: set[int], children: set[int] | None = None) -> None:
    """Run `pid` on `cores`, and its descendants (the analytics writer process) on `children` (default:
    `cores` too)."""
    affine(pid, cores)
    for child in descendants(pid):
        affine(child, cores if children is None else children)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (every thread) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants_cpu(pid: int) -> float:
    """CPU seconds so far of a process's descendants that still run."""
    total = 0.0
    for child in descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(child)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / tick, sum(ticks) / tick


def children_cpu() -> float:
    """User + system CPU of this process's finished children (wrk) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_wrk(
    server: ServerProcess, upstream: ServerProcess, url: str, lua: Path, seconds: float
) -> dict[str, float]:
    """One wrk run at c=32, with CPU per request (microseconds) of the gateway (what the platform's work
    adds to, steadier than req/s on a shared machine), the simulator, wrk and the whole machine: with
    every core busy, req/s is the machine's CPU divided by all of it."""
    assert server.proc is not None and upstream.proc is not None
    pid, sim = server.proc.pid, upstream.proc.pid
    before = cpu_seconds(pid), cpu_seconds(sim), children_cpu(), machine_cpu(), descendants_cpu(pid)
    result = wrk(url + ROUTE, lua, seconds, 32)
    after = cpu_seconds(pid), cpu_seconds(sim), children_cpu(), machine_cpu(), descendants_cpu(pid)
    per = 1e6 / max(1.0, result["rps"] * seconds)
    busy = after[3][0] - before[3][0]
    return {
        **result,
        "cpu_us": (after[0] - before[0]) * per,
        "writer_cpu_us": (after[4] - before[4]) * per,
        "upstream_cpu_us": (after[1] - before[1]) * per,
        "wrk_cpu_us": (after[2] - before[2]) * per,
        "machine_cpu_us": busy * per,
        "machine_busy": busy / max(1e-9, after[3][1] - before[3][1]) * (os.cpu_count() or 1),
    }


def side_by_side(
    pair: tuple[tuple[ServerProcess, str, Path], tuple[ServerProcess, str, Path]], seconds: float
) -> dict[str, float]:
    """Both gateways of `pair` (server, url, wrk script) loaded at once (a wrk at c=32 each), pinned to the
    same core, so the kernel's fair scheduler splits that core between them and whatever the machine's
    speed does during the run hits both alike: the ratio of their req/s is the ratio of what a request
    costs each. Also how busy their core was (about 1.0: the gateways, not the simulator, were the
    limit), and the CPU per request of each one's descendant processes (analytics writer, span exporter),
    which run on other cores."""
    procs = [server.proc for server, _, _ in pair]
    pids = [proc.pid for proc in procs if proc is not None]
    assert len(pids) == 2
    before, wall = [cpu_seconds(pid) for pid in pids], time.monotonic()
    children = [descendants_cpu(pid) for pid in pids]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda one: wrk(one[1] + ROUTE, one[2], seconds, 32), pair))
    wall = time.monotonic() - wall
    used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    helpers = [descendants_cpu(pid) - c for pid, c in zip(pids, children, strict=True)]
    per = [1e6 / max(1.0, run["rps"] * seconds) for run in runs]
    return {
        "first_rps": runs[0]["rps"],
        "second_rps": runs[1]["rps"],
        "ratio": runs[1]["rps"] / max(1e-9, runs[0]["rps"]),
        "first_cpu_us": used[0] * per[0],
        "second_cpu_us": used[1] * per[1],
        "first_children_cpu_us": helpers[0] * per[0],
        "second_children_cpu_us": helpers[1] * per[1],
        "core_busy": sum(used) / wall,
        "errors": runs[0]["errors"] + runs[1]["errors"],
    }


def admin_post(url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": ADMIN},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


# The quotas of the bench's tenants, high enough never to refuse: OpenAI's pair (rpm and tpm: each answer
# counts both and carries six x-ratelimit-* headers), or one quota (rpm: three headers, nothing to count
# after the answer).
PAIR = {"rpm": 10**9, "tpm": 10**12}
ONE = {"rpm": 10**9}


def make_keys(url: str, quotas: dict[str, int] = PAIR) -> list[str]:
    """A tenant with `quotas` and KEYS keys of it."""
    name = "bench-" + "-".join(sorted(quotas))
    tenant = admin_post(url, "/api/admin/tenants", {"name": name, "quotas": quotas})
    return [
        admin_post(url, "/api/admin/api-keys", {"name": f"k{i}", "tenant_id": tenant["id"]})["key"]
        for i in range(KEYS)
    ]


async def latency(direct: str, gw: str, keys: list[str], requests: int) -> dict[str, Any]:
    """Sequential requests alternating direct / through the gateway with a key: p50 and p99 (ms)."""
    import aiohttp

    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:

        async def one(url: str, payload: dict[str, Any], headers: dict[str, str]) -> float:
            start = time.perf_counter()
            async with session.post(url, json=payload, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            return (time.perf_counter() - start) * 1000

        for n in range(requests + 200):
            d = await one(direct + ROUTE, body(n, {}), {})
            key = {"Authorization": f"Bearer {keys[n % len(keys)]}"}
            g = await one(gw + ROUTE, body(n, {"use_cache": False}), key)
            if n >= 200:
                times["direct"].append(d)
                times["gateway"].append(g)
    out: dict[str, Any] = {
        name: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "mean": statistics.fmean(v)}
        for name, v in times.items()
    }
    out["added_p50"] = out["gateway"]["p50"] - out["direct"]["p50"]
    return out


def analytics_written(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url + "/api/admin/stats", headers={"X-API-Key": ADMIN})
    with urllib.request.urlopen(request, timeout=10) as answer:
        stats: dict[str, Any] = json.loads(answer.read())["platform"]["analytics"]
        return stats


def start_pinned(off: ServerProcess, on: ServerProcess, sim: ServerProcess) -> None:
    """The gateways on the last core, their analytics writers (processes of their own, so that the work
    runs beside the event loop, not on its core), the simulator and wrk (started from here) on the rest."""
    last = max(os.sched_getaffinity(0))
    rest = os.sched_getaffinity(0) - {last}
    for server in (off, on):
        assert server.proc is not None
        pin(server.proc.pid, {last}, rest)
    assert sim.proc is not None
    pin(sim.proc.pid, rest)
    os.sched_setaffinity(0, rest)


def measure(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Start the simulator and both gateways, run the wrk rounds and the latency series into `results`."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with simulate_server(tmp) as sim:
            upstream = sim.wait_listening() + "/v1"
            with gateway(tmp, upstream, False) as off, gateway(tmp, upstream, True) as on:
                off_url, on_url = off.wait_listening(), on.wait_listening()
                if args.pin:
                    start_pinned(off, on, sim)
                keys = make_keys(on_url)
                one_keys = make_keys(on_url, ONE)
                # Varied prompts and no cache, so each request goes upstream; "on" presents the keys in turn.
                payload = body(None, {"use_cache": False})
                scripts = {
                    "off": (off, off_url, wrk_script(tmp, "off", payload, True)),
                    "on": (on, on_url, wrk_script(tmp, "on", payload, True, keys)),
                    "on_rpm": (on, on_url, wrk_script(tmp, "on_rpm", payload, True, one_keys)),
                }
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in scripts}
                for _ in range(args.rounds):  # alternate, so drift on a shared machine hits all alike
                    for name, (server, url, lua) in scripts.items():
                        runs[name].append(measured_wrk(server, sim, url, lua, args.seconds))
                together: dict[str, list[dict[str, float]]] = {"on": [], "on_rpm": []}
                for _ in range(args.rounds if args.pin else 0):
                    for name, rows in together.items():
                        rows.append(side_by_side((scripts["off"], scripts[name]), args.seconds))
                results["runs"], results["side_by_side"] = runs, together
                results["latency"] = asyncio.run(latency(sim.url, on_url, keys, args.requests))
                time.sleep(1.0)  # the analytics writer flushes every 0.2 s
                results["analytics"] = analytics_written(on_url)


def summarise(results: dict[str, Any]) -> None:
    """The rates, ratios and CPU split of the runs in `results`, added to it."""
    runs, together = results["runs"], results["side_by_side"]
    best = {name: max(r["rps"] for r in rows) for name, rows in runs.items()}

    def paired(name: str) -> float:
        """The median over rounds of the variant's req/s over the same round's off run."""
        return statistics.median(r["rps"] / o["rps"] for r, o in zip(runs[name], runs["off"], strict=True))

    def figure(name: str) -> float:
        """Side by side when measured so (pinned), else the alternating rounds' paired median."""
        rows = together[name]
        return statistics.median(r["ratio"] for r in rows) if rows else paired(name)

    results["rate"] = {
        "off_rps": best["off"],
        "on_rps": best["on"],
        "on_rpm_rps": best["on_rpm"],
        "ratio": figure("on"),
        "rpm_ratio": figure("on_rpm"),
        "alternating_ratio": paired("on"),
        "alternating_rpm_ratio": paired("on_rpm"),
        "core_busy": statistics.median(r["core_busy"] for rows in together.values() for r in rows)
        if together["on"]
        else None,
    }
    results["cpu_us"] = {name: statistics.median(r["cpu_us"] for r in rows) for name, rows in runs.items()}
    results["cpu_split"] = {
        name: {
            part: statistics.median(r[part] for r in rows)
            for part in ("writer_cpu_us", "upstream_cpu_us", "wrk_cpu_us", "machine_cpu_us", "machine_busy")
        }
        for name, rows in runs.items()
    }
    results["errors"] = sum(r["errors"] for rows in [*runs.values(), *together.values()] for r in rows)


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The printed rows: measure, value, target."""
    lat, rate, cpu, split = results["latency"], results["rate"], results["cpu_us"], results["cpu_split"]
    how = "side by side on one core" if rate["core_busy"] is not None else "alternating, paired median"
    busy = f" (core busy {rate['core_busy']:.2f})" if rate["core_busy"] is not None else ""
    return [
        ("measure", "value", "target"),
        ("auth + analytics off, req/s c=32 (best alone)", f"{rate['off_rps']:,.0f}", ""),
        ("keys + rpm/tpm + analytics on, req/s c=32 (best alone)", f"{rate['on_rps']:,.0f}", ""),
        ("keys + rpm only + analytics on, req/s c=32 (best alone)", f"{rate['on_rpm_rps']:,.0f}", ""),
        (f"on / off, {how}", f"{rate['ratio']:.3f}{busy}", ">= 0.90"),
        (f"on (rpm only) / off, {how}", f"{rate['rpm_ratio']:.3f}", ">= 0.90"),
        (
            "on / off, rpm only / off: alternating runs, paired median",
            f"{rate['alternating_ratio']:.2f}, {rate['alternating_rpm_ratio']:.2f}",
            "",
        ),
        (
            "gateway CPU per request off / on / rpm only (us)",
            f"{cpu['off']:.0f} / {cpu['on']:.0f} / {cpu['on_rpm']:.0f}",
            "",
        ),
        ("platform CPU per request: on - off (us)", f"{cpu['on'] - cpu['off']:.1f}", ""),
        ("analytics writer process CPU per request (us)", f"{split['on']['writer_cpu_us']:.1f}", ""),
        (
            "simulator / wrk CPU per request off / on (us)",
            f"{split['off']['upstream_cpu_us']:.0f} / {split['on']['upstream_cpu_us']:.0f}, "
            f"{split['off']['wrk_cpu_us']:.0f} / {split['on']['wrk_cpu_us']:.0f}",
            "",
        ),
        ("direct p50 / p99 at c=1 (ms)", f"{lat['direct']['p50']:.3f} / {lat['direct']['p99']:.3f}", ""),
        (
            "gateway on p50 / p99 at c=1 (ms)",
            f"{lat['gateway']['p50']:.3f} / {lat['gateway']['p99']:.3f}",
            "",
        ),
        ("added p50 (ms)", f"{lat['added_p50']:.3f}", "<= 1"),
        (
            "analytics written / dropped",
            f"{results['analytics']['written']:,} / {results['analytics']['dropped']}",
            "",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each wrk run")
    parser.add_argument(
        "--requests", type=int, default=2000, help="sequential requests in the latency series"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind of wrk run")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="pin each gateway to the last core, the rest to the others; measure side by side",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"when": datetime.datetime.now(datetime.UTC).isoformat(), "pinned": args.pin}
    measure(args, results)
    summarise(results)
    rows = table(results)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows))
    out = ROOT / "bench" / "results" / "gateway_platform.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    rate, lat = results["rate"], results["latency"]
    problems = []
    if rate["ratio"] < 0.9:
        problems.append(f"on/off {rate['ratio']:.3f} < 0.90 (rpm and tpm)")
    if rate["rpm_ratio"] < 0.9:
        problems.append(f"on/off {rate['rpm_ratio']:.3f} < 0.90 (rpm only)")
    if lat["added_p50"] > 1.0:
        problems.append(f"added p50 {lat['added_p50']:.3f} ms > 1 ms")
    if results["errors"]:
        problems.append(f"{results['errors']} failed requests")
    for problem in problems:
        print(f"MISSED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
