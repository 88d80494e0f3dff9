"""`llmkit gateway` in front of `llmkit simulate`: added latency, proxied rate, cache-hit rate.

Run with `.venv/bin/python bench/gateway.py [--seconds S] [--requests N]` (or `make bench`). The upstream is
a real `llmkit simulate` process with no latency model; the gateway is a real `llmkit gateway` process
(one worker, access log off) in front of it; both measured in this run, the direct calls being the baseline.
Prints a table, writes bench/results/gateway.json, exits 1 when a target is missed.
Targets (issue 6): added latency at concurrency 1 p50 <= 1 ms and p99 <= 3 ms; at concurrency 32 with one
gateway worker >= 50% of the direct-to-upstream request rate; cache hits >= 8,000 requests/s on one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.wrk import parse_wrk  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false", "LLMKIT_SERVER_LOG_LEVEL": "warning"}
MODEL = "llama3.2"
PROMPT = "How do I make concurrent async HTTP requests in Python?"
# Kind -> (the upstream URL suffix, the direct route, the gateway route, extra gateway body fields).
KINDS = {
    "ollama": ("", "/api/chat", "/api/chat-optimized", {"use_cache": False}),
    "openai": ("/v1", "/v1/chat/completions", "/v1/chat/completions", {"use_cache": False}),
}


def body(n: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """A chat body; n != None makes the prompt unique (nothing remembered per body applies)."""
    text = PROMPT if n is None else f"{PROMPT} (variant {n})"
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": False, **extra}


def simulate_server(tmp: Path) -> ServerProcess:
    """A `llmkit simulate` with no latency model (started by `with`)."""
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=QUIET, command="simulate")


def gateway_server(tmp: Path, upstream: str, kind: str) -> ServerProcess:
    env = {
        **QUIET,
        "LLMKIT_GATEWAY_UPSTREAM_KIND": kind,
        "LLMKIT_GATEWAY_UPSTREAMS": upstream,
        "LLMKIT_GATEWAY_MAX_CONCURRENT": "32",
        "LLMKIT_GATEWAY_MAX_QUEUE_SIZE": "10000",
        "LLMKIT_GATEWAY_MODEL": MODEL,
    }
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(direct: str, gateway: str, kind: str, requests: int) -> dict[str, Any]:
    """Sequential requests alternating direct / through the gateway; p50 and p99 of each (ms)."""
    import aiohttp

    _, direct_route, gateway_route, extra = KINDS[kind]
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:

        async def one(url: str, payload: dict[str, Any]) -> float:
            start = time.perf_counter()
            async with session.post(url, json=payload) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            return (time.perf_counter() - start) * 1000

        for n in range(requests + 200):
            d = await one(direct + direct_route, body(n, {}))
            g = await one(gateway + gateway_route, body(n, extra))
            if n >= 200:  # warm-up: connections, caches of the interpreter
                times["direct"].append(d)
                times["gateway"].append(g)
    result: dict[str, Any] = {}
    for name, values in times.items():
        result[name] = {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "mean": statistics.fmean(values)}
    result["added_p50"] = result["gateway"]["p50"] - result["direct"]["p50"]
    result["added_p99"] = result["gateway"]["p99"] - result["direct"]["p99"]
    return result


def wrk_script(tmp: Path, name: str, payload: dict[str, Any], vary: bool, keys: Sequence[str] = ()) -> Path:
    """wrk's Lua posting `payload`; with `vary` each request gets a new prompt, and with `keys` each
    presents the next of them as a Bearer key (as many clients would)."""
    text = json.dumps(payload)
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        f"wrk.body = [[{text}]]",
    ]
    if vary:
        head, tail = text.split(PROMPT)
        headers = "headers" if keys else "nil"  # nil: wrk.headers
        if keys:
            # One header table per key, built once: wrk runs this Lua on its one thread for every
            # request, so a table made per request would be the client's cost, not the server's.
            tables = ", ".join(
                f'{{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {k}"}}' for k in keys
            )
            lines.append(f"local keyed = {{{tables}}}")
        lines += ["local n = 0", "request = function()", "  n = n + 1"]
        if keys:
            lines.append("  local headers = keyed[(n % #keyed) + 1]")
        lines += [
            f"  return wrk.format(nil, nil, {headers}, [[{head}{PROMPT} (wrk ]] .. n .. [[){tail}]])",
            "end",
        ]
    path = tmp / f"{name}.lua"
    path.write_text("\n".join([*lines, ""]))
    return path


def wrk(url: str, lua: Path, seconds: float, connections: int) -> dict[str, float]:
    """wrk -t1 for `seconds`: requests/s and the count of failed requests."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    summary = parse_wrk(out)
    return {"rps": summary["rps"], "errors": summary["non_2xx"] + summary["socket_errors"]}


def throughput(tmp: Path, direct: str, gateway: str, kind: str, seconds: float) -> dict[str, Any]:
    """Unique prompts at concurrency 32, direct and through the gateway, then cache hits on the gateway."""
    _, direct_route, gateway_route, extra = KINDS[kind]
    direct_lua = wrk_script(tmp, f"direct-{kind}", body(None, {}), vary=True)
    gateway_lua = wrk_script(tmp, f"gateway-{kind}", body(None, extra), vary=True)
    hit_lua = wrk_script(tmp, f"hits-{kind}", body(None, {"use_cache": True}), vary=False)
    runs: dict[str, Any] = {"direct": [], "gateway": []}
    for _ in range(2):  # alternate, so drift on a shared machine hits both alike
        runs["direct"].append(wrk(direct + direct_route, direct_lua, seconds, 32))
        runs["gateway"].append(wrk(gateway + gateway_route, gateway_lua, seconds, 32))
    best = {name: max(r["rps"] for r in rows) for name, rows in runs.items()}
    subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body(None, {"use_cache": True})),
            gateway + gateway_route,
        ],
        check=True,
    )
    hits = wrk(gateway + gateway_route, hit_lua, seconds, 32)
    return {
        "direct_rps": best["direct"],
        "gateway_rps": best["gateway"],
        "ratio": best["gateway"] / best["direct"],
        "cache_hit_rps": hits["rps"],
        "errors": sum(r["errors"] for rows in runs.values() for r in rows) + hits["errors"],
        "runs": runs,
    }


def table(results: dict[str, Any]) -> str:
    rows = [("measure", "ollama", "openai", "target")]
    get = results["kinds"]
    rows.append(
        (
            "direct p50 / p99 (ms)",
            *(
                f"{get[k]['latency']['direct']['p50']:.3f} / {get[k]['latency']['direct']['p99']:.3f}"
                for k in KINDS
            ),
            "",
        )
    )
    rows.append(
        (
            "gateway p50 / p99 (ms)",
            *(
                f"{get[k]['latency']['gateway']['p50']:.3f} / {get[k]['latency']['gateway']['p99']:.3f}"
                for k in KINDS
            ),
            "",
        )
    )
    rows.append(("added p50 (ms)", *(f"{get[k]['latency']['added_p50']:.3f}" for k in KINDS), "<= 1"))
    rows.append(("added p99 (ms)", *(f"{get[k]['latency']['added_p99']:.3f}" for k in KINDS), "<= 3"))
    rows.append(("direct req/s, c=32", *(f"{get[k]['rate']['direct_rps']:,.0f}" for k in KINDS), ""))
    rows.append(("gateway req/s, c=32", *(f"{get[k]['rate']['gateway_rps']:,.0f}" for k in KINDS), ""))
    rows.append(("gateway / direct", *(f"{get[k]['rate']['ratio']:.2f}" for k in KINDS), ">= 0.50"))
    rows.append(
        ("cache hits req/s, c=32", *(f"{get[k]['rate']['cache_hit_rps']:,.0f}" for k in KINDS), ">= 8,000")
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def missed(results: dict[str, Any]) -> list[str]:
    out = []
    for kind, r in results["kinds"].items():
        if r["latency"]["added_p50"] > 1.0:
            out.append(f"{kind}: added p50 {r['latency']['added_p50']:.3f} ms > 1 ms")
        if r["latency"]["added_p99"] > 3.0:
            out.append(f"{kind}: added p99 {r['latency']['added_p99']:.3f} ms > 3 ms")
        if r["rate"]["ratio"] < 0.5:
            out.append(f"{kind}: gateway/direct {r['rate']['ratio']:.2f} < 0.50")
        if r["rate"]["cache_hit_rps"] < 8000:
            out.append(f"{kind}: cache hits {r['rate']['cache_hit_rps']:,.0f}/s < 8,000")
        if r["rate"]["errors"]:
            out.append(f"{kind}: {r['rate']['errors']} failed requests")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per latency series")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"when": datetime.datetime.now(datetime.UTC).isoformat(), "kinds": {}}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for kind, (suffix, *_rest) in KINDS.items():
            with simulate_server(tmp) as sim:
                sim.wait_listening()
                gw = gateway_server(tmp, sim.url + suffix, kind).start()
                try:
                    gw.wait_listening()
                    lat = asyncio.run(latency(sim.url, gw.url, kind, args.requests))
                    rate = throughput(tmp, sim.url, gw.url, kind, args.seconds)
                finally:
                    gw.close()
                results["kinds"][kind] = {"latency": lat, "rate": rate}
    print(table(results))
    out = ROOT / "bench" / "results" / "gateway.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    problems = missed(results)
    for problem in problems:
        print(f"MISSED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
