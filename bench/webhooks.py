"""Webhook delivery throughput: how fast one gateway's delivery worker drains a backlog of signed events
to a local aiohttp receiver, against a plain aiohttp client POSTing the same signed bodies to the same
receiver at the same concurrency (the baseline, in the same run).

Run with `.venv/bin/python bench/webhooks.py [--events N] [--json]` (or `make bench`). One `llmkit gateway`
(SQLite platform store, one worker) with a webhook to the receiver, a separate process (`--receiver`)
that verifies every signature and counts distinct webhook-ids. The outbox is filled while the gateway is
stopped (N key.created events written by the store's own add_deliveries), then the gateway starts and
sends them; the rate is N over the time between the receiver's first and last POST, for both rows.
Prints a table, writes bench/results/webhooks.json (or prints the JSON with --json); exits 1 when the
target is missed. Target (issue 16): >= 1,000 events/s delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import QUIET  # noqa: E402
from llmkit.platform.webhooks.delivery import CONCURRENCY  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

ADMIN = "bench-admin-key-0123456789abcdef"
TARGET_EVENTS_S = 1000.0
# Neither phase may take longer than this: the bench stops by itself even when deliveries stall.
PHASE_TIMEOUT_S = 120.0


async def serve_receiver(secret: str) -> None:
    """The receiver process: POST /hook verifies and counts; GET /count tells; POST /reset zeroes."""
    from aiohttp import web

    from llmkit.platform.webhooks.signing import InvalidSignature, verify

    state: dict[str, Any] = {"ids": set(), "posts": 0, "refused": 0, "first": None, "last": None}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        state["posts"] += 1
        try:
            verify(secret, request.headers, body)
        except InvalidSignature:
            state["refused"] += 1
            return web.Response(status=400)
        state["ids"].add(request.headers["webhook-id"])
        state["first"] = state["first"] or now
        state["last"] = now
        return web.Response(text="ok")

    async def count(_: web.Request) -> web.Response:
        s = state
        seconds = (s["last"] - s["first"]) if s["first"] is not None else 0.0
        return web.json_response(
            {"unique": len(s["ids"]), "posts": s["posts"], "refused": s["refused"], "seconds": seconds}
        )

    async def reset(_: web.Request) -> web.Response:
        state.update(ids=set(), posts=0, refused=0, first=None, last=None)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def start_receiver(secret: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--receiver"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_WEBHOOK_SECRET": secret},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def gateway(tmp: Path) -> ServerProcess:
    env = {
        **QUIET,
        "LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp}/platform.db",
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
        "LLMKIT_GATEWAY_ANALYTICS_ENABLED": "false",
    }
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway")


async def received(session: aiohttp.ClientSession, receiver: str, events: int) -> dict[str, Any]:
    """The receiver's count once it has `events` distinct webhook-ids (or PHASE_TIMEOUT_S passed)."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while True:
        async with session.get(f"{receiver}/count") as answer:
            got: dict[str, Any] = await answer.json()
        if got["unique"] >= events or time.monotonic() > deadline:
            got["complete"] = got["unique"] >= events
            got["events_s"] = got["unique"] / got["seconds"] if got["seconds"] else 0.0
            return got
        await asyncio.sleep(0.05)


async def register(tmp: Path, receiver: str, secret: str) -> str:
    """Start the gateway once (the store is migrated), register the webhook, stop it; the webhook's id."""
    with gateway(tmp) as gw:
        url = gw.wait_listening()
        async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN}) as session:
            body = {"url": f"{receiver}/hook", "events": ["key.created"], "secret": secret}
            async with session.post(f"{url}/api/admin/webhooks", json=body) as made:
                assert made.status == 201, await made.text()
                return str((await made.json())["id"])


async def fill_outbox(tmp: Path, events: int) -> list[bytes]:
    """`events` key.created events in the stopped gateway's outbox, as Platform.emit writes them."""
    from llmkit.platform.store import platform_store_from_url
    from llmkit.platform.webhooks.events import deliveries_of

    store = platform_store_from_url(f"sqlite:///{tmp}/platform.db")
    await store.open()
    try:
        hooks = await store.webhooks()
        now = time.time()
        rows = [
            d
            for i in range(events)
            for d in deliveries_of(hooks, "key.created", {"id": f"k{i}", "name": f"bench-{i}"}, None, now)
        ]
        await store.add_deliveries(rows)
    finally:
        await store.close()
    return [d.payload for d in rows]


async def through_gateway(tmp: Path, receiver: str, events: int) -> tuple[dict[str, Any], list[bytes]]:
    """The backlog sent by a gateway started on it; the bodies it held."""
    bodies = await fill_outbox(tmp, events)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{receiver}/reset"):
            pass
        started = time.perf_counter()
        with gateway(tmp) as gw:
            gw.wait_listening()
            got = await received(session, receiver, events)
        got["wall_s"] = time.perf_counter() - started
    return got, bodies


async def baseline(receiver: str, secret: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """The same bodies signed and POSTed by a plain aiohttp client, `concurrency` at a time."""
    from llmkit.platform.webhooks.signing import signed_headers

    todo = list(enumerate(bodies))
    timeout = aiohttp.ClientTimeout(total=10)

    async def sender(session: aiohttp.ClientSession) -> None:
        while todo:
            i, body = todo.pop()
            headers = signed_headers([secret], f"msg_base{i}", int(time.time()), body)
            headers["Content-Type"] = "application/json"
            async with session.post(f"{receiver}/hook", data=body, headers=headers, timeout=timeout) as a:
                await a.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{receiver}/reset"):
            pass
        await asyncio.wait_for(
            asyncio.gather(*(sender(session) for _ in range(concurrency))), PHASE_TIMEOUT_S
        )
        return await received(session, receiver, len(bodies))


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from llmkit.platform.webhooks.signing import new_secret

    secret = new_secret()
    proc, receiver = start_receiver(secret)
    try:
        await register(tmp, receiver, secret)
        gw, bodies = await through_gateway(tmp, receiver, args.events)
        base = await baseline(receiver, secret, bodies, CONCURRENCY)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "date": datetime.date.today().isoformat(),
        "events": args.events,
        "concurrency": CONCURRENCY,
        "gateway": gw,
        "baseline": base,
        "target_events_s": TARGET_EVENTS_S,
    }


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"webhook delivery: {r['events']} events, concurrency {r['concurrency']}")
    for column in ("sender", "delivered", "POSTs", "refused", "seconds", "events/s", "target"):
        table.add_column(column, justify="left" if column == "sender" else "right")
    for name, row, target in (
        ("gateway delivery worker (outbox drain)", r["gateway"], f">= {TARGET_EVENTS_S:,.0f}"),
        ("baseline: plain aiohttp client", r["baseline"], ""),
    ):
        table.add_row(
            name,
            f"{row['unique']:,}",
            f"{row['posts']:,}",
            str(row["refused"]),
            f"{row['seconds']:.2f}",
            f"{row['events_s']:,.0f}",
            target,
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(
        f"gateway: {r['gateway']['wall_s']:.2f} s from its start to the last delivery (start-up included)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events in the backlog")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(serve_receiver(os.environ["BENCH_WEBHOOK_SECRET"]))
        return 0
    with tempfile.TemporaryDirectory(prefix="llmkit-bench-webhooks-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    ok = results["gateway"]["complete"] and results["gateway"]["events_s"] >= TARGET_EVENTS_S
    results["ok"] = ok
    out = ROOT / "bench" / "results" / "webhooks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
        print(f"target >= {TARGET_EVENTS_S:,.0f} events/s through the gateway: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
