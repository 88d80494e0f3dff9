"""Tracing's cost on the gateway: c=32 throughput with tracing off, on at SAMPLING_RATE=1.0 and at 0.1,
and (with `--baseline`) an earlier llmkit with nothing of it, before one `llmkit simulate`, in the same run.

Run with `.venv/bin/python bench/tracing.py [--seconds S] [--rounds N] [--baseline PATH]`.
Prints a table, writes bench/results/tracing.json, exits 1 when a target is missed.
Targets (issue 17): c=32 throughput with tracing on at 1.0 >= 0.8x tracing off; at 0.1 >= 0.95x; off: no
change from before (`--baseline PATH`: a checkout of llmkit before tracing, e.g. `git worktree add /tmp/before
1751114`, run as the same gateway from that source).

Spans go over OTLP/HTTP to a receiver in this process that counts them without decoding (a collector's
cost is not the gateway's). The simulator is not traced. Each gateway runs pinned to the last core, its
descendants (the span exporter process), the simulator, wrk and the receiver to the others (`--no-pin`:
the scheduler places them). The variants alternate for `--rounds` rounds (ratios: the median of each
round's pair, best-of-rounds beside them); then, the figure the targets are checked against, each traced
variant runs side by side with tracing off for `--side-rounds` rounds: both gateways loaded at once on the
same core, so the machine's swings hit both alike and the ratio of their req/s is the ratio of their
per-request cost (the median over rounds, with how busy that core was).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import MODEL, QUIET, body, simulate_server, wrk, wrk_script  # noqa: E402
from bench.gateway_platform import cpu_seconds, pin, side_by_side  # noqa: E402
from tests.otlp_receiver import OtlpReceiver  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

ROUTE = "/v1/chat/completions"
TARGETS = {"on_1": 0.8, "on_0.1": 0.95, "main": None}


def gateway(tmp: Path, upstream: str, name: str, telemetry: dict[str, str], code: Path) -> ServerProcess:
    """One worker in front of the simulator, running the llmkit at `code`, with `telemetry` variables."""
    env = {
        **QUIET,
        "PYTHONPATH": str(code),
        "LLMKIT_GATEWAY_UPSTREAM_KIND": "openai",
        "LLMKIT_GATEWAY_UPSTREAMS": upstream,
        "LLMKIT_GATEWAY_MAX_CONCURRENT": "32",
        "LLMKIT_GATEWAY_MAX_QUEUE_SIZE": "10000",
        "LLMKIT_GATEWAY_MODEL": MODEL,
        "LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp}/platform-{name}.db",
        "LLMKIT_GATEWAY_ANALYTICS_ENABLED": "false",
        **telemetry,
    }
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway")


def measured(server: ServerProcess, url: str, lua: Path, seconds: float) -> dict[str, float]:
    """One wrk run at c=32 with the gateway's CPU per request (microseconds)."""
    assert server.proc is not None
    before = cpu_seconds(server.proc.pid)
    result = wrk(url + ROUTE, lua, seconds, 32)
    used = cpu_seconds(server.proc.pid) - before
    return {**result, "cpu_us": used * 1e6 / max(1.0, result["rps"] * seconds)}


def checkout(value: str) -> Path:
    """--baseline's value: a folder holding an llmkit source tree."""
    path = Path(value)
    if not (path / "llmkit" / "__init__.py").exists():
        raise argparse.ArgumentTypeError(f"{value}: no llmkit checkout there")
    return path


Runs = dict[str, list[dict[str, float]]]


def measure(args: argparse.Namespace, results: dict[str, Any]) -> tuple[Runs, Runs]:
    """The alternating runs of every variant, and the side-by-side runs of each traced one with off."""
    with tempfile.TemporaryDirectory() as name, OtlpReceiver(decode=False) as sink:
        tmp = Path(name)
        traced = {"TELEMETRY_ENABLED": "true", "OTLP_ENDPOINT": sink.url}
        variants = {
            "off": ({}, ROOT),
            "on_1": ({**traced, "SAMPLING_RATE": "1.0"}, ROOT),
            "on_0.1": ({**traced, "SAMPLING_RATE": "0.1"}, ROOT),
        }
        if args.baseline is not None:
            variants["main"] = ({}, args.baseline)
        with simulate_server(tmp) as sim:
            upstream = sim.wait_listening() + "/v1"
            servers = {n: gateway(tmp, upstream, n, env, code) for n, (env, code) in variants.items()}
            try:
                urls = {n: s.start().wait_listening() for n, s in servers.items()}
                if args.pin:
                    last = max(os.sched_getaffinity(0))
                    rest = os.sched_getaffinity(0) - {last}
                    for server in servers.values():
                        assert server.proc is not None
                        # A span exporter process works beside the event loop, not on its core.
                        pin(server.proc.pid, {last}, rest)
                    assert sim.proc is not None
                    pin(sim.proc.pid, rest, rest)
                    os.sched_setaffinity(0, rest)  # wrk and the receiver's thread inherit it
                # Varied prompts and no cache: each request goes upstream in a `chat {model}` span.
                lua = wrk_script(tmp, "chat", body(None, {"use_cache": False}), True)
                runs: Runs = {n: [] for n in servers}
                for _ in range(args.rounds):  # alternate, so drift on a shared machine hits all alike
                    for n, server in servers.items():
                        runs[n].append(measured(server, urls[n], lua, args.seconds))
                together: Runs = {"on_1": [], "on_0.1": []}
                if args.pin:
                    for _ in range(args.side_rounds):
                        for n, rows in together.items():
                            pair = ((servers["off"], urls["off"], lua), (servers[n], urls[n], lua))
                            rows.append(side_by_side(pair, args.seconds))
            finally:
                for server in servers.values():
                    server.close()
        results["exports"] = {"requests": sink.requests, "bytes": sink.bytes}
    return runs, together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the alternating wrk runs")
    parser.add_argument(
        "--side-rounds", type=int, default=5, help="rounds of each traced variant side by side with off"
    )
    parser.add_argument(
        "--baseline", type=checkout, default=None, help="a checkout of llmkit before tracing, run beside"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="pin each gateway to the last core; the simulator, wrk, the receiver, the exporters elsewhere",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (bash scripts/ensure-bench-tools.sh)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"when": datetime.datetime.now(datetime.UTC).isoformat()}
    runs, together = measure(args, results)
    best = {n: max(r["rps"] for r in rows) for n, rows in runs.items()}

    def paired(n: str) -> float:
        return statistics.median(r["rps"] / o["rps"] for r, o in zip(runs[n], runs["off"], strict=True))

    cpu = {n: statistics.median(r["cpu_us"] for r in rows) for n, rows in runs.items()}
    ratios = {n: {"paired": paired(n), "best": best[n] / best["off"]} for n in runs if n != "off"}
    side = {
        n: {
            key: statistics.median(r[key] for r in rows)
            for key in ("ratio", "core_busy", "first_cpu_us", "second_cpu_us", "second_children_cpu_us")
        }
        for n, rows in together.items()
        if rows
    }
    results.update(pinned=args.pin, rps=best, ratios=ratios, cpu_us=cpu, runs=runs)
    results.update(side_by_side=side, side_runs=together)
    results["errors"] = sum(r["errors"] for rows in [*runs.values(), *together.values()] for r in rows)
    labels = {"off": "tracing off", "on_1": "tracing on, rate 1.0", "on_0.1": "tracing on, rate 0.1"}
    labels["main"] = "before (the --baseline checkout, no tracing code)"
    rows = [("measure", "value", "target")]
    for n in runs:
        rows.append((f"{labels[n]}, req/s c=32", f"{best[n]:,.0f}", ""))
    for n, ratio in ratios.items():
        target = TARGETS[n]
        want = f">= {target:.2f}" if target is not None else "~ 1.00 (off / before = 1 / this)"
        rows.append(
            (
                f"{labels[n]} / off, paired median (best / best)",
                f"{ratio['paired']:.2f} ({ratio['best']:.2f})",
                want,
            )
        )
    rows.append(
        ("gateway CPU per request (us): " + " / ".join(runs), " / ".join(f"{cpu[n]:.0f}" for n in runs), "")
    )
    for n, got in side.items():
        rows.append(
            (
                f"side by side on one core: {labels[n]} / off, median of {len(together[n])} (core busy)",
                f"{got['ratio']:.2f} ({got['core_busy']:.2f})",
                f">= {TARGETS[n]:.2f}",
            )
        )
        rows.append(
            (
                f"  side by side, gateway CPU per request off / {n} (+ exporter process) (us)",
                f"{got['first_cpu_us']:.0f} / {got['second_cpu_us']:.0f}"
                f" (+ {got['second_children_cpu_us']:.0f})",
                "",
            )
        )
    exports = results["exports"]
    rows.append(("OTLP export requests / MB", f"{exports['requests']:,} / {exports['bytes'] / 1e6:.1f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows))
    out = ROOT / "bench" / "results" / "tracing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    # The side-by-side ratio when there is one (alternating runs are noise on a shared machine).
    figure = {n: side[n]["ratio"] if n in side else ratios[n]["paired"] for n in ratios}
    problems = [
        f"{n} / off {figure[n]:.2f} < {target:.2f}"
        for n, target in TARGETS.items()
        if target is not None and figure[n] < target
    ]
    if results["errors"]:
        problems.append(f"{results['errors']} failed requests")
    for problem in problems:
        print(f"MISSED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
