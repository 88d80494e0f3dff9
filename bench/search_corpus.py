"""The search benchmark's corpus: generated, deterministic, shipped in bench/data (so every run and every
machine measures the same documents and questions).

Each document is a runbook of a fictional service: a title, an overview, a configuration and a
troubleshooting section, with facts drawn from shared vocabularies (teams, cities, stores, protocols,
symptoms), so many documents share each word and only the combination identifies one. Each question
asks about one document by two or three of its facts, in other words than the document's where a synonym
exists, and names that document as the relevant one.

Run `.venv/bin/python bench/search_corpus.py` to write bench/data/search_corpus.jsonl and
bench/data/search_questions.jsonl again (the same bytes: the generator is seeded).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "search_corpus.jsonl"
QUESTIONS = DATA / "search_questions.jsonl"
DOCUMENTS = 600
SEED = 20261203

_SYLLABLES = "ka ri to mel an sor vek li da quo ban tir el mor zu pen ha ost rin cal".split()
KINDS = ["gateway", "scheduler", "indexer", "cache", "broker", "ledger", "crawler", "renderer", "notifier"]
TEAMS = ["platform", "payments", "search", "identity", "storage", "growth", "mobile", "billing", "data"]
CITIES = ["Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Hanoi", "Turin", "Quebec", "Perth"]
STORES = ["PostgreSQL", "Redis", "ClickHouse", "SQLite", "Cassandra", "S3", "etcd"]
PROTOCOLS = ["gRPC", "HTTP/2", "WebSocket", "AMQP", "MQTT", "GraphQL"]
SYMPTOMS = [
    ("memory grows until the process is killed", "memory leak", "the heap"),
    ("requests time out under load", "slow responses", "latency"),
    ("disk fills with old segments", "disk space runs out", "storage"),
    ("connections are refused after a deploy", "clients cannot connect", "the network"),
    ("the queue backs up overnight", "a growing backlog", "throughput"),
    ("certificates expire without warning", "TLS failures", "security"),
]
FIXES = [
    "lower the batch size and restart the workers",
    "raise the connection pool limit",
    "rotate the signing keys and redeploy",
    "compact the segments every hour",
    "add a replica and rebalance the shards",
    "turn on the circuit breaker",
]
# The words a question says for a fact, where it has another.
SYNONYMS = {"gateway": "proxy", "scheduler": "job runner", "cache": "caching layer", "broker": "message bus"}


def _name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in taken:
            taken.add(name)
            return name


def generate(
    documents: int = DOCUMENTS, seed: int = SEED
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The documents and the questions (one per document), deterministic for a seed."""
    rng = random.Random(seed)
    taken: set[str] = set()
    docs, questions = [], []
    for n in range(documents):
        name, kind = _name(rng, taken), rng.choice(KINDS)
        team, city, store = rng.choice(TEAMS), rng.choice(CITIES), rng.choice(STORES)
        protocol, port = rng.choice(PROTOCOLS), rng.randrange(2000, 9999)
        symptom, plain, area = rng.choice(SYMPTOMS)
        fix = rng.choice(FIXES)
        doc_id = f"doc-{n:04d}"
        content = (
            f"# {name} {kind}\n\n## Overview\n\nThe {name} {kind} is owned by the {team} team in {city}. "
            f"It speaks {protocol} on port {port} and keeps its state in {store}.\n\n"
            f"## Configuration\n\nSet the {store} address and the {protocol} listener before the first "
            f"start; the {team} team reviews every change to the {kind}.\n\n"
            f"## Troubleshooting\n\nWhen {symptom}, {fix}. This is the usual cause of {plain} in {area}."
        )
        docs.append(
            {
                "id": doc_id,
                "title": f"{name} {kind} runbook",
                "content": content,
                "metadata": {"team": team, "kind": kind},
            }
        )
        said = SYNONYMS.get(kind, kind)
        templates = [
            f"which {said} run by the {team} team keeps its state in {store}",
            f"what to do about {plain} in the {name} service",
            f"the {said} in {city} speaking {protocol}",
            f"{team} team {said} on port {port}",
        ]
        questions.append({"question": rng.choice(templates), "relevant": [doc_id]})
    return docs, questions


def write() -> None:
    docs, questions = generate()
    DATA.mkdir(exist_ok=True)
    CORPUS.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in docs))
    QUESTIONS.write_text("".join(json.dumps(q, sort_keys=True) + "\n" for q in questions))


def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shipped corpus and questions."""
    docs = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    return docs, questions


if __name__ == "__main__":
    write()
    print(f"wrote {CORPUS} and {QUESTIONS}", file=sys.stderr)
