"""Search quality and speed: the gateway's /api/search over the shipped corpus, in front of `llmkit
simulate` embeddings, with a tenant key on every request (keys required, a tenant with quotas, analytics
on), against raw SQLite FTS5 on the same database file and the same server's /health, in the same run.

Run with `.venv/bin/python bench/search.py [--filler-docs N] [--seconds S] [--store postgresql]` (or
`make bench`); `--store postgresql` runs the same on a PostgreSQL server started for the run.
Prints a table, writes bench/results/search.json, exits 1 when a target is missed.

Quality: recall@5 and MRR (over the top 10) of keyword, semantic and hybrid search for the 600 questions of
bench/data/search_questions.jsonl (one relevant document each; bench/search_corpus.py). The simulator's
embeddings hash words and word pairs: "semantic" is then a second lexical ranking, not meaning, and its
recall says nothing about a real embedding model's.

Targets (issue 16): keyword search p50 <= 5 ms at 10,000 chunks; a cached search >= 5,000 req/s on one
worker; indexing >= 200 documents/s with embeddings from `llmkit simulate`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import QUIET, pct, simulate_server, wrk  # noqa: E402
from bench.search_corpus import generate, load  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

ADMIN = "bench-admin-key-0123456789abcdef"
TYPES = ("keyword", "semantic", "hybrid")
BATCH = 100
TARGET_KEYWORD_P50_MS = 5.0
TARGET_CACHED_RPS = 5000.0
TARGET_INDEX_DOCS_S = 200.0
CHUNKS_AT_SCALE = 10_000


def gateway(tmp: Path, simulator: str, platform_url: str) -> ServerProcess:
    env = {
        **QUIET,
        "LLMKIT_GATEWAY_UPSTREAM_KIND": "openai",
        "LLMKIT_GATEWAY_UPSTREAMS": f"{simulator}/v1",
        "LLMKIT_GATEWAY_PLATFORM_URL": platform_url,
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
        "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
        "LLMKIT_GATEWAY_ANALYTICS_ENABLED": "true",
        "LLMKIT_GATEWAY_EMBEDDINGS_URL": simulator,
    }
    return ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway")


async def tenant_key(session: aiohttp.ClientSession, url: str) -> str:
    """A key of a tenant with quotas (checked on every search request's key lookup)."""
    admin = {"X-API-Key": ADMIN}
    quotas = {"rpm": 10_000_000, "tpm": 10_000_000_000}
    async with session.post(
        f"{url}/api/admin/tenants", json={"name": "bench", "quotas": quotas}, headers=admin
    ) as r:
        tenant = (await r.json())["id"]
    body = {"name": "bench", "tenant_id": tenant, "scopes": ["search", "chat"]}
    async with session.post(f"{url}/api/admin/api-keys", json=body, headers=admin) as r:
        return str((await r.json())["key"])


async def index(
    session: aiohttp.ClientSession, admin: aiohttp.ClientSession, url: str, docs: list[dict[str, Any]]
) -> dict[str, Any]:
    """POST the documents in batches, then wait until every index job finished: documents/s overall."""
    started = time.perf_counter()
    for at in range(0, len(docs), BATCH):
        async with session.post(f"{url}/api/documents", json={"documents": docs[at : at + BATCH]}) as r:
            assert r.status == 202, await r.text()
    while True:
        pending = 0
        for state in ("queued", "running"):
            async with admin.get(f"{url}/api/admin/jobs", params={"state": state, "limit": "1"}) as r:
                pending += len((await r.json())["jobs"])
        if not pending:
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    async with admin.get(f"{url}/api/admin/jobs", params={"state": "failed", "limit": "1"}) as r:
        failed = len((await r.json())["jobs"])
    return {
        "documents": len(docs),
        "seconds": round(seconds, 2),
        "docs_per_s": len(docs) / seconds,
        "failed": failed,
    }


async def direct_embeddings(
    session: aiohttp.ClientSession, simulator: str, docs: list[dict[str, Any]]
) -> float:
    """Documents/s the simulator embeds when asked directly (one call per document, two at a time, as the
    job runner does): the ceiling the embedding upstream puts on indexing."""
    texts = [[part for part in d["content"].split("\n\n") if part.strip()] for d in docs]
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(2)

    async def one(parts: list[str]) -> None:
        async with semaphore:
            body = {"model": "text-embedding-3-small", "input": parts, "encoding_format": "base64"}
            async with session.post(f"{simulator}/v1/embeddings", json=body) as r:
                await r.read()

    await asyncio.gather(*(one(p) for p in texts))
    return len(docs) / (time.perf_counter() - started)


async def search(
    session: aiohttp.ClientSession, url: str, query: str, kind: str, limit: int
) -> dict[str, Any]:
    async with session.post(f"{url}/api/search", json={"query": query, "type": kind, "limit": limit}) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def quality(
    session: aiohttp.ClientSession, url: str, questions: list[dict[str, Any]]
) -> dict[str, Any]:
    """recall@5 and MRR@10 per search type."""
    out: dict[str, Any] = {}
    for kind in TYPES:
        recall, reciprocal = [], []
        for q in questions:
            hits = (await search(session, url, q["question"], kind, 10))["hits"]
            ranked = list(dict.fromkeys(h["document_id"] for h in hits))
            relevant = set(q["relevant"])
            recall.append(len(relevant & set(ranked[:5])) / len(relevant))
            rank = next((i for i, d in enumerate(ranked, start=1) if d in relevant), None)
            reciprocal.append(1 / rank if rank else 0.0)
        out[kind] = {"recall@5": statistics.fmean(recall), "mrr": statistics.fmean(reciprocal)}
    return out


async def latency(
    session: aiohttp.ClientSession, url: str, questions: list[dict[str, Any]], kind: str, n: int
) -> dict[str, float]:
    """Uncached searches (each query new: a round number appended), one at a time: p50 / p99 in ms, as
    the client sees them and as the server took them."""
    client, server = [], []
    for i in range(n):
        query = f"{questions[i % len(questions)]['question']} r{i}"
        started = time.perf_counter()
        body = await search(session, url, query, kind, 10)
        client.append((time.perf_counter() - started) * 1000)
        assert body["cached"] is False
        server.append(body["took_ms"])
    return {"p50": pct(client, 0.5), "p99": pct(client, 0.99), "server_p50": pct(server, 0.5)}


def raw_latency(platform_url: str, questions: list[dict[str, Any]], n: int) -> dict[str, float]:
    """The same keyword search (the store's statements: the words' chunk counts, then the ranked match)
    on the same database, raw: sqlite3 on the file, or one asyncpg connection."""
    if platform_url.startswith("postgresql://"):
        return asyncio.run(_postgres_latency(platform_url, questions, n))
    from llmkit.platform.store import documents_sql as ds
    from llmkit.platform.store.migrations import qmark

    conn = sqlite3.connect(platform_url.removeprefix("sqlite:///"))
    [(tenant_id,)] = conn.execute("SELECT DISTINCT tenant_id FROM documents").fetchall()
    times = []
    for i in range(n):
        words = ds.query_words(f"{questions[i % len(questions)]['question']} r{i}")
        started = time.perf_counter()
        marks = ", ".join("?" for _ in words)
        counts = conn.execute(ds.SQLITE_DOCUMENT_FREQUENCIES.format(marks=marks), words).fetchall()
        [(n,)] = conn.execute(ds.SQLITE_CHUNKS).fetchall()
        statement = ds.search_statement("sqlite", tenant_id, words, dict(counts), n, 10, None)
        if statement:
            conn.execute(qmark(statement[0]), statement[1]).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}


async def _postgres_latency(url: str, questions: list[dict[str, Any]], n: int) -> dict[str, float]:
    import asyncpg

    from llmkit.platform.store import documents_sql as ds

    conn = await asyncpg.connect(url)
    try:
        tenant_id = await conn.fetchval("SELECT DISTINCT tenant_id FROM documents")
        times = []
        for i in range(n):
            words = ds.query_words(f"{questions[i % len(questions)]['question']} r{i}")
            started = time.perf_counter()
            rows = await conn.fetch(ds.POSTGRES_DOCUMENT_FREQUENCIES, tenant_id, words)
            counts, n = ds.postgres_frequencies(rows)
            statement = ds.search_statement("postgresql", tenant_id, words, counts, n, 10, None)
            if statement:
                await conn.fetch(statement[0], *statement[1])
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}


def wrk_search(tmp: Path, url: str, key: str, seconds: float) -> dict[str, float]:
    """Cached searches: the same keyword search over and over (each after the first a cache hit)."""
    body = json.dumps({"query": "platform team gateway on port", "type": "hybrid", "limit": 10})
    lua = tmp / "search.lua"
    lua.write_text(
        "\n".join(
            [
                'wrk.method = "POST"',
                'wrk.headers["Content-Type"] = "application/json"',
                f'wrk.headers["Authorization"] = "Bearer {key}"',
                f"wrk.body = [[{body}]]",
                "",
            ]
        )
    )
    health = tmp / "health.lua"
    health.write_text('wrk.method = "GET"\n')
    return {
        "cached": wrk(f"{url}/api/search", lua, seconds, 32)["rps"],
        "health": wrk(f"{url}/health", health, seconds, 32)["rps"],
    }


async def chunks(platform_url: str) -> int:
    """How many chunks the store holds."""
    if platform_url.startswith("postgresql://"):
        import asyncpg

        conn = await asyncpg.connect(platform_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM document_chunks"))
        finally:
            await conn.close()
    with sqlite3.connect(platform_url.removeprefix("sqlite:///")) as db:
        return int(db.execute("SELECT count(*) FROM document_chunks").fetchone()[0])


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    docs, questions = load()
    results: dict[str, Any] = {"date": datetime.date.today().isoformat()}
    with simulate_server(tmp) as sim_process:
        simulator = sim_process.wait_listening()
        with gateway(tmp, simulator, args.platform_url) as gw_process:
            url = gw_process.wait_listening()
            async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN}) as admin:
                key = await tenant_key(admin, url)
                results["embed_direct_docs_per_s"] = await direct_embeddings(admin, simulator, docs)
                results.update(await measure(url, key, admin, docs, questions, args))
            results["store"] = args.store
            results["sqlite_keyword"] = await asyncio.to_thread(
                raw_latency, args.platform_url, questions, args.searches
            )
            results["rps"] = wrk_search(tmp, url, key, args.seconds)
    return results


async def measure(
    url: str,
    key: str,
    admin: aiohttp.ClientSession,
    docs: list[dict[str, Any]],
    questions: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Index the corpus, rank the questions, add filler, time uncached searches: as the tenant's key."""
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        results["index"] = await index(session, admin, url, docs)
        results["corpus_chunks"] = await chunks(args.platform_url)
        results["quality"] = await quality(session, url, questions)
        filler, _ = generate(args.filler_docs, seed=7)
        for d in filler:
            d["id"] = d["id"].replace("doc-", "filler-")
        results["index_filler"] = await index(session, admin, url, filler)
        results["chunks"] = await chunks(args.platform_url)
        results["latency"] = {
            kind: await latency(session, url, questions, kind, args.searches) for kind in TYPES
        }
    return results


def table(r: dict[str, Any]) -> str:
    q, lat = r["quality"], r["latency"]
    rows = [
        "| search | recall@5 | MRR@10 | p50 ms | p99 ms | server p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for kind in TYPES:
        rows.append(
            f"| {kind} | {q[kind]['recall@5']:.3f} | {q[kind]['mrr']:.3f} | {lat[kind]['p50']:.2f} | "
            f"{lat[kind]['p99']:.2f} | {lat[kind]['server_p50']:.2f} |"
        )
    s = r["sqlite_keyword"]
    raw = f"raw {r.get('store', 'sqlite')} statements (baseline, same database)"
    rows.append(f"| {raw} | | | {s['p50']:.2f} | {s['p99']:.2f} | |")
    index, filler, rps = r["index"], r["index_filler"], r["rps"]
    rows += [
        "",
        f"Latency at {r['chunks']} chunks ({r['corpus_chunks']} of the corpus, the rest filler), one search "
        "at a time, each query new (uncached); semantic includes embedding the query (the simulator).",
        "",
        "| figure | value | baseline (same run) | target |",
        "|---|---|---|---|",
        f"| indexing, corpus | {index['docs_per_s']:.0f} docs/s ({index['failed']} failed) | simulator "
        f"embeddings alone {r['embed_direct_docs_per_s']:.0f} docs/s | >= {TARGET_INDEX_DOCS_S:.0f} |",
        f"| indexing, filler | {filler['docs_per_s']:.0f} docs/s | | >= {TARGET_INDEX_DOCS_S:.0f} |",
        f"| cached hybrid search, c=32 | {rps['cached']:.0f} req/s | GET /health {rps['health']:.0f} req/s "
        f"| >= {TARGET_CACHED_RPS:.0f} |",
        f"| keyword p50 at {r['chunks']} chunks | {lat['keyword']['p50']:.2f} ms | raw statements "
        f"{s['p50']:.2f} ms | <= {TARGET_KEYWORD_P50_MS:.0f} ms (SQLite) |",
    ]
    return "\n".join(rows)


def missed(r: dict[str, Any]) -> list[str]:
    out = []
    at_scale = r["chunks"] >= CHUNKS_AT_SCALE and r.get("store", "sqlite") == "sqlite"
    if at_scale and r["latency"]["keyword"]["p50"] > TARGET_KEYWORD_P50_MS:
        out.append("keyword p50")
    if r["rps"]["cached"] < TARGET_CACHED_RPS:
        out.append("cached req/s")
    if min(r["index"]["docs_per_s"], r["index_filler"]["docs_per_s"]) < TARGET_INDEX_DOCS_S:
        out.append("indexing docs/s")
    if r["index"]["failed"] or r["index_filler"]["failed"]:
        out.append("failed index jobs")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--filler-docs", type=int, default=2000, help="documents added for the latency figures"
    )
    parser.add_argument("--searches", type=int, default=300, help="uncached searches per type")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the platform store: a SQLite file, or a PostgreSQL server started for the run (Debian's)",
    )
    parser.add_argument(
        "--keep", type=Path, help="build the store in this (new) directory and keep it, to inspect after"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmkit-bench-search-"))
        args.tmp = tmp
        args.platform_url = f"sqlite:///{tmp}/platform.db"
        if args.store == "postgresql":
            from tests.postgres import PostgresServer

            server = PostgresServer()
            server.start()
            stack.callback(server.stop)
            args.platform_url = server.url_for(asyncio.run(server.create_database()))
        results = asyncio.run(run(args, Path(tmp)))
    print(table(results))
    out = ROOT / "bench" / "results" / ("search.json" if args.store == "sqlite" else "search-postgresql.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    misses = missed(results)
    if misses:
        print(f"missed: {', '.join(misses)}", file=sys.stderr)
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
