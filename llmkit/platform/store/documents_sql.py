"""The document statements both stores run, the per-database keyword search, and rows to dataclasses.

Parameters are written `$1, $2, ...` as in `migrations.py`; the SQLite store numbers them `?1, ?2, ...`.
"""

from __future__ import annotations

import bisect
import html
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.platform.store.base import Chunk, Document, SearchHit

_COLUMNS = "d.id, d.tenant_id, d.title, d.content, d.metadata, d.created_at, d.updated_at"
INSERT_DOCUMENT = """INSERT INTO documents (id, tenant_id, title, content, metadata, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""
SELECT_DOCUMENT = f"SELECT {_COLUMNS} FROM documents d WHERE d.tenant_id = $1 AND d.id = $2"
UPDATE_DOCUMENT = """UPDATE documents SET title = $3, content = $4, metadata = $5, updated_at = $6
    WHERE tenant_id = $1 AND id = $2"""
DELETE_DOCUMENT = "DELETE FROM documents WHERE tenant_id = $1 AND id = $2"
DELETE_TENANT_DOCUMENTS = "DELETE FROM documents WHERE tenant_id = $1"
INSERT_CHUNK = """INSERT INTO document_chunks
    (tenant_id, document_id, ordinal, heading, text, tokens, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7)"""
# PostgreSQL also stores the chunk's words as FTS5 splits them (its tsvector is made of these), counted.
INSERT_CHUNK_POSTGRES = """INSERT INTO document_chunks
    (tenant_id, document_id, ordinal, heading, text, tokens, embedding, terms, word_count)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""
SELECT_CHUNKS = """SELECT ordinal, text, tokens, heading FROM document_chunks
    WHERE tenant_id = $1 AND document_id = $2 ORDER BY ordinal"""
DELETE_CHUNKS = "DELETE FROM document_chunks WHERE tenant_id = $1 AND document_id = $2"
# The chunks an index job made are written only while the document is the one it read ($3 its
# updated_at): a job that read older content finds a newer one (or none) and leaves it to the newer job.
DOCUMENT_UNCHANGED = "SELECT 1 FROM documents WHERE tenant_id = $1 AND id = $2 AND updated_at = $3"
DOCUMENT_UNCHANGED_LOCKED = f"{DOCUMENT_UNCHANGED} FOR UPDATE"
DELETE_TENANT_CHUNKS = "DELETE FROM document_chunks WHERE tenant_id = $1"
# Which version of a document its chunks are of, and the model of their vectors (NULL: none).
MARK_INDEXED = "UPDATE documents SET indexed_at = $3, embedding_model = $4 WHERE tenant_id = $1 AND id = $2"
SELECT_VECTOR_VERSIONS = """SELECT id, indexed_at FROM documents
    WHERE tenant_id = $1 AND embedding_model = $2 AND indexed_at IS NOT NULL"""
BUMP_SEARCH_VERSION = """INSERT INTO search_versions (tenant_id, version) VALUES ($1, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET version = search_versions.version + 1"""
SELECT_SEARCH_VERSION = "SELECT version FROM search_versions WHERE tenant_id = $1"
# Grows with every change to any tenant's chunks (versions only ever go up): what the SQLite store's
# copy of the index's word counts is as fresh as.
SUM_SEARCH_VERSIONS = "SELECT coalesce(sum(version), 0) FROM search_versions"

# A query is cut to its first words: each one is a term of the index lookup.
MAX_QUERY_WORDS = 64
# Letters and digits only: what survives can be quoted into an FTS5 or tsquery expression as it is, so no
# query text (quotes, *, NEAR(, :, &|!) ever reaches either parser as syntax.
_WORD = re.compile(r"[^\W_]+")

# A keyword search scores only the chunks holding one of the query's rarest words: the words in the
# fewest chunks, taken while their chunk counts add up to at most this (and always the rarest one). The
# rest (often "the", "team", "port": in half the chunks, weight ~0) still count in each candidate's
# score, but a chunk with none of the rare words is not ranked (Elasticsearch's cutoff frequency). Every
# match of "any word" would be scored otherwise: at 10,000 chunks a question of common words made nearly
# every chunk a candidate (40 ms); now a search scores about this many. Both stores choose alike.
CANDIDATE_BUDGET = 1000
# The candidates' scores come from FTS5's own bm25 over every query word, each word once: the chunks
# with a rare and a common word match "(rare) AND (common)", those with rare words only "(rare) NOT
# (common)"; a word a chunk lacks adds nothing, so both are the score "any word" would give.
_SQLITE_SCORED = "SELECT rowid AS seq, bm25(document_chunks_fts) AS s FROM document_chunks_fts "
# The page is ranked from the candidates' seq, tenant and place alone, and only its rows' text and title
# are read: reading them for every candidate (~500) was a third of the statement's time. Each row also
# says which SUM_SEARCH_VERSIONS it read (one statement reads one snapshot): the store's copy of the
# word counts is checked in the same trip to the database as the search.
_SQLITE_SEARCH = """WITH f AS MATERIALIZED ({scored}),
    page AS MATERIALIZED (
        SELECT f.seq, f.s, c.document_id, c.ordinal
        FROM f
        JOIN document_chunks c ON c.seq = f.seq{documents}
        WHERE c.tenant_id = $2{filters}
        ORDER BY round(f.s, 9), c.document_id, c.ordinal
        LIMIT $3
    )
    SELECT p.document_id, d.title, p.ordinal, c.text, -p.s, NULL,
        (SELECT coalesce(sum(version), 0) FROM search_versions)
    FROM page p
    JOIN document_chunks c ON c.seq = p.seq
    JOIN documents d ON d.tenant_id = $2 AND d.id = p.document_id
    ORDER BY round(p.s, 9), p.document_id, p.ordinal"""
# Filters read the candidates' documents' metadata.
_SQLITE_FILTERED = "\n        JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id"
SQLITE_DOCUMENT_FREQUENCIES = "SELECT term, doc FROM document_chunks_vocab WHERE term IN ({marks})"
# FTS5's N: every tenant's chunks.
SQLITE_CHUNKS = "SELECT count(*) FROM document_chunks"
# The chunks of the tenant ($1) holding each word ($2, an array), and (the word NULL) all its chunks.
POSTGRES_DOCUMENT_FREQUENCIES = """SELECT w, (SELECT count(*) FROM document_chunks c
        WHERE c.tenant_id = $1 AND c.words @@ to_tsquery('simple', quote_literal(w)))
    FROM unnest($2::text[]) AS w
    UNION ALL SELECT NULL, count(*) FROM document_chunks WHERE tenant_id = $1"""
# BM25 as SQLite's FTS5 computes it (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)), at least
# 1e-6), over the tenant's chunks: the words of both are split alike (text_words), so both stores rank
# the same chunks first. The query words ($4) and their chunk counts ($5) come from
# POSTGRES_DOCUMENT_FREQUENCIES, the candidates from the rare words' query ($1); a chunk's term
# frequencies from its tsvector's positions. Both order by the score to 9 decimals, then document and
# ordinal: equal scores the two compute a last bit apart tie, and ties break alike.
_POSTGRES_SEARCH = """WITH stats AS MATERIALIZED (
        SELECT count(*)::float8 AS n, greatest(coalesce(avg(word_count), 0), 1)::float8 AS avgdl
        FROM document_chunks WHERE tenant_id = $2
    ),
    terms AS MATERIALIZED (
        SELECT t.term, greatest(ln((s.n - t.n + 0.5) / (t.n + 0.5)), 1e-6) AS idf
        FROM unnest($4::text[], $5::float8[]) AS t(term, n) CROSS JOIN stats s
    )
    SELECT c.document_id, d.title, c.ordinal, c.text, r.score, NULL
    FROM document_chunks c
    JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT sum(t.idf * array_length(u.positions, 1) * 2.2 / (array_length(u.positions, 1)
                + 1.2 * (0.25 + 0.75 * coalesce(c.word_count, length(c.words)) / s.avgdl))) AS score
        FROM unnest(c.words) u JOIN terms t ON t.term = u.lexeme
    ) r
    WHERE c.tenant_id = $2 AND c.words @@ to_tsquery('simple', $1){filters}
    ORDER BY round(r.score::numeric, 9) DESC, c.document_id, c.ordinal
    LIMIT $3"""
# A highlight is the window of this many words holding the most distinct query words.
HIGHLIGHT_WORDS = 16
_LIST = f"""SELECT {_COLUMNS} FROM documents d WHERE d.tenant_id = $1{{filters}}
    ORDER BY d.created_at, d.id LIMIT $2 OFFSET $3"""


def vectors_statement(documents: int) -> str:
    """The vectors of a tenant's ($1) chunks of `documents` documents ($2...), by document and ordinal."""
    marks = ", ".join(f"${n}" for n in range(2, 2 + documents))
    return f"""SELECT document_id, ordinal, embedding FROM document_chunks
    WHERE tenant_id = $1 AND document_id IN ({marks}) AND embedding IS NOT NULL
    ORDER BY document_id, ordinal"""


def chunk_hits_statement(kind: str, keys: int, filters: Mapping[str, Any] | None) -> str:
    """A tenant's ($1) chunks named by `keys` (document id, ordinal) pairs ($2, $3, ...) whose documents
    pass `filters` (their parameters after the pairs), as search rows with no score or highlight."""
    pairs = " OR ".join(f"(c.document_id = ${n} AND c.ordinal = ${n + 1})" for n in range(2, 2 + 2 * keys, 2))
    return f"""SELECT c.document_id, d.title, c.ordinal, c.text, 0, NULL FROM document_chunks c
    JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id
    WHERE c.tenant_id = $1 AND ({pairs}){filter_clause(kind, filters, first=2 + 2 * keys)}"""


def text_words(text: str) -> list[str]:
    """Every lower-case word of a text, in order: letters and digits, as FTS5's unicode61 splits them."""
    return [w.lower() for w in _WORD.findall(unicodedata.normalize("NFC", text))]


def query_words(query: str) -> list[str]:
    """The distinct lower-case words of a user's query, in order, at most MAX_QUERY_WORDS."""
    return list(dict.fromkeys(text_words(query)))[:MAX_QUERY_WORDS]


def rare_words(
    words: Sequence[str], frequencies: Mapping[str, int], chunks: int
) -> tuple[list[str], list[str]]:
    """`words` (in order) split into the rare ones, which pick the candidates (CANDIDATE_BUDGET), and the
    common ones; words in no chunk are in neither, nor (unless every word is) words in at least half of
    the `chunks`: their BM25 idf is at most 0, which FTS5 floors to 1e-6, so they weigh nothing but
    cost the most (their lists are the longest)."""
    present = [w for w in words if frequencies.get(w, 0) > 0]
    weighed = [w for w in present if 2 * frequencies[w] < chunks]
    present = sorted(weighed or present, key=lambda w: (frequencies[w], w))
    rare: set[str] = set()
    total = 0
    for word in present:
        if rare and total + frequencies[word] > CANDIDATE_BUDGET:
            break
        rare.add(word)
        total += frequencies[word]
    return [w for w in words if w in rare], [w for w in present if w not in rare]


def search_statement(
    kind: str,
    tenant_id: str,
    words: Sequence[str],
    frequencies: Mapping[str, int],
    chunks: int,
    limit: int,
    filters: Mapping[str, Any] | None,
) -> tuple[str, tuple[Any, ...]] | None:
    """The keyword search for a store of `kind` and its parameters up to the filters' (`filter_args`
    follow), given how many of the `chunks` hold each word; None when no word is in any chunk."""
    rare, common = rare_words(words, frequencies, chunks)
    if not rare:
        return None
    if kind == "sqlite":
        either = " OR ".join(f'"{w}"' for w in rare)
        documents = _SQLITE_FILTERED if filters else ""
        if not common:
            return (
                _SQLITE_SEARCH.format(
                    scored=f"{_SQLITE_SCORED}WHERE document_chunks_fts MATCH $1",
                    documents=documents,
                    filters=filter_clause(kind, filters, first=4),
                ),
                (either, tenant_id, limit),
            )
        others = " OR ".join(f'"{w}"' for w in common)
        scored = (
            f"{_SQLITE_SCORED}WHERE document_chunks_fts MATCH $1 UNION ALL "
            f"{_SQLITE_SCORED}WHERE document_chunks_fts MATCH $4"
        )
        return (
            _SQLITE_SEARCH.format(
                scored=scored, documents=documents, filters=filter_clause(kind, filters, first=5)
            ),
            (f"({either}) AND ({others})", tenant_id, limit, f"({either}) NOT ({others})"),
        )
    scored_words = rare + common
    return (
        _POSTGRES_SEARCH.format(filters=filter_clause(kind, filters, first=6)),
        (
            " | ".join(f"'{w}'" for w in rare),
            tenant_id,
            limit,
            scored_words,
            [float(frequencies[w]) for w in scored_words],
        ),
    )


def highlight(text: str, words: Sequence[str]) -> str:
    """The HIGHLIGHT_WORDS-word window of `text` holding the most distinct `words` (then the most of
    them, then the first), HTML-escaped, each of those words in <mark></mark>, … where text was cut;
    empty when it holds none."""
    text = unicodedata.normalize("NFC", text)
    tokens = list(_WORD.finditer(text))
    wanted = set(words)
    hits = [i for i, t in enumerate(tokens) if t.group().lower() in wanted]
    if not hits:
        return ""
    lowered = [tokens[i].group().lower() for i in hits]
    best = (0, 0, 0)
    for at in hits:
        start = max(0, min(at - 2, len(tokens) - HIGHLIGHT_WORDS))
        inside = lowered[bisect.bisect_left(hits, start) : bisect.bisect_left(hits, start + HIGHLIGHT_WORDS)]
        best = max(best, (len(set(inside)), len(inside), -start))
    start = -best[2]
    end = min(len(tokens), start + HIGHLIGHT_WORDS)
    marked = set(hits)
    out = ["…"] if start > 0 else []
    at = tokens[start].start()
    for i in range(start, end):
        token = tokens[i]
        out.append(html.escape(text[at : token.start()]))
        word = html.escape(token.group())
        out.append(f"<mark>{word}</mark>" if i in marked else word)
        at = token.end()
    if end < len(tokens):
        out.append("…")
    return "".join(out)


def postgres_frequencies(rows: Sequence[Sequence[Any]]) -> tuple[dict[str, int], int]:
    """POSTGRES_DOCUMENT_FREQUENCIES' rows as (chunks holding each word, the tenant's chunks)."""
    counts = {row[0]: int(row[1]) for row in rows if row[0] is not None}
    return counts, next((int(row[1]) for row in rows if row[0] is None), 0)


def hits_of(rows: Sequence[Sequence[Any]], words: Sequence[str]) -> list[SearchHit]:
    """Keyword search rows as SearchHits, each highlighted for `words`."""
    hits = []
    for row in rows:
        marked = highlight(row[3], words)
        hits.append(hit_of((*row[:5], marked)))
    return hits


def list_statement(kind: str, filters: Mapping[str, Any] | None) -> str:
    """A page of a tenant's documents ($1 tenant, $2 limit, $3 offset, then the filters' parameters)."""
    return _LIST.format(filters=filter_clause(kind, filters, first=4))


def filter_args(filters: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """The parameters `filter_clause` numbered: each key, then its value (JSON for PostgreSQL's jsonb)."""
    args: list[Any] = []
    for key, value in (filters or {}).items():
        args += [key, value]
    return tuple(args)


def postgres_filter_args(filters: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """`filter_args` with each value as JSON text, which PostgreSQL compares as jsonb."""
    args: list[Any] = []
    for key, value in (filters or {}).items():
        args += [key, json.dumps(value)]
    return tuple(args)


def _sqlite_types(value: Any) -> str:
    # json_each's atom loses the JSON type (true is 1), so the type is compared too.
    if value is None:
        return "'null'"
    if isinstance(value, bool):
        return "'true', 'false'"
    if isinstance(value, int | float):
        return "'integer', 'real'"
    return "'text'"


def filter_clause(kind: str, filters: Mapping[str, Any] | None, first: int) -> str:
    """` AND ...` keeping documents `d` whose metadata has each top-level key equal to the filter's value
    (strings, numbers, booleans, null), its parameters (`filter_args`) numbered from `first`."""
    clause = ""
    n = first
    for value in (filters or {}).values():
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise ValueError("metadata filters compare strings, numbers, booleans or null")
        key, val = f"${n}", f"${n + 1}"
        if kind == "sqlite":
            match = f"{val} IS NULL" if value is None else f"j.atom = {val}"
            clause += (
                f" AND EXISTS (SELECT 1 FROM json_each(d.metadata) j WHERE j.key = {key}"
                f" AND j.type IN ({_sqlite_types(value)}) AND {match})"
            )
        else:
            clause += f" AND (d.metadata::jsonb -> {key}::text) = {val}::text::jsonb"
        n += 2
    return clause


def document_row(document: Document) -> tuple[Any, ...]:
    """A document as INSERT_DOCUMENT's parameters (metadata as JSON text)."""
    return (
        document.id,
        document.tenant_id,
        document.title,
        document.content,
        json.dumps(dict(document.metadata), ensure_ascii=False),
        document.created_at,
        document.updated_at,
    )


def document_of(row: Sequence[Any]) -> Document:
    """A SELECT_DOCUMENT row as a Document."""
    return Document(
        id=row[0],
        tenant_id=row[1],
        title=row[2],
        content=row[3],
        metadata=json.loads(row[4]),
        created_at=row[5],
        updated_at=row[6],
    )


def chunk_rows(
    tenant_id: str,
    document_id: str,
    chunks: Sequence[Chunk],
    vectors: Sequence[bytes] | None = None,
    kind: str = "sqlite",
) -> list[tuple[Any, ...]]:
    """Chunks as INSERT_CHUNK's parameters (the heading path as a JSON array), each with its vector; for
    PostgreSQL (INSERT_CHUNK_POSTGRES) also its words and their count."""
    if vectors is not None and len(vectors) != len(chunks):
        raise ValueError(f"{len(vectors)} vectors for {len(chunks)} chunks")
    rows: list[tuple[Any, ...]] = []
    for i, c in enumerate(chunks):
        heading = json.dumps(list(c.headings), ensure_ascii=False)
        vector = None if vectors is None else vectors[i]
        row: tuple[Any, ...] = (tenant_id, document_id, c.ordinal, heading, c.text, c.tokens, vector)
        if kind != "sqlite":
            words = text_words(c.text)
            row = (*row, " ".join(words), len(words))
        rows.append(row)
    return rows


def chunk_of(row: Sequence[Any]) -> Chunk:
    """A SELECT_CHUNKS row as a Chunk."""
    return Chunk(ordinal=row[0], text=row[1], tokens=row[2], headings=tuple(json.loads(row[3])))


def hit_of(row: Sequence[Any]) -> SearchHit:
    """A search row as a SearchHit."""
    return SearchHit(
        document_id=row[0],
        title=row[1],
        ordinal=row[2],
        text=row[3],
        score=float(row[4]),
        highlights=(row[5],) if row[5] else (),
    )
