"""Instructions per request of `llmkit simulate` and its bare baseline, counted by callgrind.

`.venv/bin/python bench/callgrind.py [--requests N] [--variants off,varied,logged]` runs each variant's
server under `valgrind --tool=callgrind`, sends warm-up requests, zeroes the counters, sends N requests at
c=32 from aiohttp, dumps the counters and prints thousands of instructions per request (all threads of the
server). Counts repeat to ~0.2% run to run, where req/s on this machine spreads by 10%: use it to decide
whether a change to the hot path pays, then confirm with bench/simulate.py. Under valgrind a request takes
~50x longer, so anything paced by the clock runs more often per request than at full speed.

Variants: `repeat` (one body, as bench/simulate.py's main row), `varied` (a new prompt every request),
`logged` (varied, access log on: the default settings), `sched` (varied, max_num_seqs and the load factor
on), `bare` (bench/bare_simulate.py, varied). Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.simulate import PROMPT, free_port, prepare_answers  # noqa: E402
from tests.serve_process import LLMKIT  # noqa: E402

VARIANTS = ("repeat", "varied", "logged", "sched", "bare")
JSON = {"Content-Type": "application/json"}
_TOTALS = re.compile(r"^summary: (\d+)", re.M)


def server_argv(variant: str, port: int, answers: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMKIT_")}
    if variant.startswith("patched:"):
        # A private ablation harness: PATCHED_SIM is a script taking PORT ANSWERS PATCHES.
        script = os.environ["PATCHED_SIM"]
        return [sys.executable, script, str(port), str(answers), variant.partition(":")[2]], env
    if variant == "bare":
        answer = next(answers.iterdir())
        return [
            sys.executable,
            str(ROOT / "bench" / "bare_simulate.py"),
            str(answer),
            "--port",
            str(port),
        ], env
    env["LLMKIT_SERVER_ACCESS_LOG"] = "true" if variant == "logged" else "false"
    if variant == "sched":
        env |= {"LLMKIT_SIMULATE_MAX_NUM_SEQS": "256", "LLMKIT_SIMULATE_TIME_FACTOR_UNDER_LOAD": "2"}
    argv = [sys.executable, LLMKIT, "simulate", "--port", str(port), "--workers", "1"]
    return [*argv, "--responses-dir", str(answers)], env


def body(n: int, varied: bool) -> bytes:
    prompt = f"{PROMPT} (variant {n})" if varied else PROMPT
    return b'{"model":"gpt-4o","messages":[{"role":"user","content":"%s"}]}' % prompt.encode()


async def send(url: str, count: int, start: int, varied: bool, concurrency: int = 32) -> None:
    counter = iter(range(start, start + count))
    async with aiohttp.ClientSession() as session:

        async def lane() -> None:
            for n in counter:
                async with session.post(
                    url, data=body(n, varied), headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")

        await asyncio.gather(*(lane() for _ in range(concurrency)))


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                async with session.post(url, data=body(0, False), headers=JSON) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the server did not answer within the timeout")


def counted(pid: int, out: Path, work: Callable[[], object], keep: Path | None) -> int:
    """Instructions (all threads) the callgrind'd process `pid`, writing its dumps to `out`.PID.*, runs
    while `work()` runs: counters zeroed before, dumped and summed after; the dumps copied to `keep`."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    work()
    for old in out.parent.glob(f"{out.name}.{pid}*"):
        old.unlink()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dumps = sorted(out.parent.glob(f"{out.name}.{pid}.*"))
    total = sum(int(m.group(1)) for d in dumps for m in _TOTALS.finditer(d.read_text(errors="replace")))
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for dump in dumps:
            shutil.copy(dump, keep / dump.name)
    return total


def measure(
    variant: str, requests: int, warmup: int, tmp: Path, answers: Path, keep: Path | None, ready: float = 300
) -> float:
    """Thousands of instructions per request of one variant's server."""
    port = free_port()
    out = tmp / f"cg-{variant}"
    argv, env = server_argv(variant, port, answers)
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no"]
    proc = subprocess.Popen([*valgrind, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    varied = variant != "repeat"
    try:
        asyncio.run(wait_ready(url, proc, ready))
        asyncio.run(send(url, warmup, 1, varied))
        total = counted(proc.pid, out, lambda: asyncio.run(send(url, requests, warmup + 1, varied)), keep)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return total / requests / 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per variant")
    parser.add_argument("--warmup", type=int, default=300, help="requests before the counters are zeroed")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=300, help="seconds a server may take to start (busy machine)"
    )
    parser.add_argument("--keep", type=Path, help="copy the counters' dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS) - {v for v in variants if v.startswith("patched:")})
    if unknown:
        print(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="llmkit-cg-") as name:
        tmp = Path(name)
        answers, _ = prepare_answers(tmp)
        for variant in variants:
            kinstr = measure(variant, args.requests, args.warmup, tmp, answers, args.keep, args.ready_timeout)
            print(f"{variant:8} {kinstr:9.1f}k instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
