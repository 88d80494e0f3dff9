"""Instructions per request of `llmkit gateway` with the platform off and on, counted by callgrind.

`.venv/bin/python bench/gateway_callgrind.py [--requests N] [--variants off,on,on_rpm]` runs, for each
variant, the gateway of bench/gateway_platform.py (one worker) under `valgrind --tool=callgrind` in front
of a real `llmkit simulate` that is not under valgrind, sends warm-up requests, zeroes the counters, sends
N requests at c=32 from aiohttp, dumps the counters and prints thousands of instructions per request (all
threads of the gateway process; the analytics child is another program and is not counted).

Variants: `off` (auth and analytics off), `on` (a key on every request, 8 keys of a tenant with rpm and
tpm quotas, analytics on), `on_rpm` (the same with an rpm quota only). Under valgrind a request takes
~50x longer, so what the clock paces (the key cache's 1 s ttl, the analytics writer's 0.2 s flush, the
keys' last-used flush) is slowed by `--slow` (50) so that per request it costs what it costs at full speed.
Counts repeat to a few tenths of a percent: use it to decide whether a change to the platform's path pays,
then confirm with bench/gateway_platform.py. Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.callgrind import counted  # noqa: E402
from bench.gateway import body, simulate_server  # noqa: E402
from bench.gateway_platform import ONE, PAIR, ROUTE, gateway, make_keys  # noqa: E402

VARIANTS = ("off", "on", "on_rpm")


def serve(slow: float, argv: list[str]) -> None:
    """`llmkit ARGV` with the clock-paced work `slow` times rarer (what runs under valgrind)."""
    from llmkit.cli.main import run
    from llmkit.platform import service
    from llmkit.platform.analytics.writer import AnalyticsWriter
    from llmkit.platform.keys import KeyVerifier

    KeyVerifier.__init__.__kwdefaults__["cache_ttl"] *= slow
    AnalyticsWriter.__init__.__kwdefaults__["flush_interval"] *= slow
    service.USAGE_FLUSH_S *= slow
    if ablation := os.environ.get("GATEWAY_CALLGRIND_ABLATE"):
        # A private ablation harness: a script run here, before the server starts, patches what it measures.
        exec(compile(Path(ablation).read_text(), ablation, "exec"), {})
    sys.argv = ["llmkit", *argv]
    run()


async def send(url: str, count: int, start: int, keys: list[str], concurrency: int = 32) -> None:
    counter = iter(range(start, start + count))
    async with aiohttp.ClientSession() as session:

        async def lane() -> None:
            for n in counter:
                headers = {"Authorization": f"Bearer {keys[n % len(keys)]}"} if keys else {}
                async with session.post(url, json=body(n, {"use_cache": False}), headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")

        await asyncio.gather(*(lane() for _ in range(concurrency)))


def measure(
    variant: str, requests: int, warmup: int, slow: float, tmp: Path, upstream: str, keep: Path | None
) -> float:
    """Thousands of instructions per request of one variant's gateway."""
    out = tmp / f"cg-{variant}"
    server = gateway(tmp, upstream, variant != "off")
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no"]
    server.args = [*valgrind, sys.executable, __file__, "--serve", str(slow), "gateway", *server.args[2:]]
    with server:
        url = server.wait_listening(timeout=600)
        assert server.proc is not None
        pid = server.proc.pid
        keys = [] if variant == "off" else make_keys(url, PAIR if variant == "on" else ONE)
        asyncio.run(send(url + ROUTE, warmup, 1, keys))
        total = counted(pid, out, lambda: asyncio.run(send(url + ROUTE, requests, warmup + 1, keys)), keep)
    return total / requests / 1000


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(float(sys.argv[2]), sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per variant")
    parser.add_argument("--warmup", type=int, default=300, help="requests before the counters are zeroed")
    parser.add_argument("--slow", type=float, default=50.0, help="how much rarer clock-paced work runs")
    parser.add_argument(
        "--variants", default="off,on", help=f"comma-separated: {', '.join(VARIANTS)} (default off,on)"
    )
    parser.add_argument("--keep", type=Path, help="copy the counters' dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        print(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="llmkit-gwcg-") as name:
        tmp = Path(name)
        with simulate_server(tmp) as sim:
            upstream = sim.wait_listening() + "/v1"
            for variant in variants:
                counts[variant] = measure(
                    variant, args.requests, args.warmup, args.slow, tmp, upstream, args.keep
                )
                print(f"{variant:7} {counts[variant]:9.1f}k instructions per request", flush=True)
    if "off" in counts:
        for variant in variants:
            if variant != "off":
                print(f"off / {variant}: {counts['off'] / counts[variant]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
