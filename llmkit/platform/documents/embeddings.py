"""Vectors for texts from an OpenAI-compatible `POST /v1/embeddings` upstream, batched.

Vectors travel as base64 float32 (`encoding_format: base64`, a quarter of the JSON floats' size and no
float parsing) and come back as unit-length float32 rows, so a dot product is the cosine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import orjson

from llmkit.core.secrets import mask_secrets, mask_url
from llmkit.errors import BackendError, ConfigError
from llmkit.settings import Settings

# Seconds a query's vector is kept: the same question asked again is not embedded again.
QUERY_TTL_S = 300.0
QUERY_CACHE_MAX = 4096


class EmbeddingsError(BackendError):
    """The embeddings upstream failed, timed out or answered something that is not embeddings."""


@dataclass(frozen=True, slots=True)
class EmbeddingsConfig:
    """Where embeddings come from: the settings' gateway.embeddings_* (url empty: none)."""

    url: str
    model: str = "text-embedding-3-small"
    api_key: str = ""
    dimensions: int = 0
    batch: int = 64
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddingsConfig | None:
        """The gateway's embeddings upstream, or None when gateway.embeddings_url is empty."""
        g = settings.gateway
        if not g.embeddings_url:
            return None
        return cls(
            url=endpoint(g.embeddings_url),
            model=g.embeddings_model,
            api_key=g.embeddings_api_key,
            dimensions=g.embeddings_dimensions,
            batch=g.embeddings_batch,
            timeout_s=g.embeddings_timeout_s,
        )


def endpoint(url: str) -> str:
    """The embeddings URL of gateway.embeddings_url: a server (`/v1/embeddings` added), a `/v1` base
    (`/embeddings` added) or the full route."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(
            f"gateway.embeddings_url {mask_url(url)!r} must be an http:// or https:// URL of an "
            "OpenAI-compatible server, e.g. http://127.0.0.1:4545/v1"
        )
    if base.endswith("/embeddings"):
        return base
    if base.endswith("/v1"):
        return f"{base}/embeddings"
    return f"{base}/v1/embeddings"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), as float32."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class EmbeddingsClient:
    """Embeds texts in batches of `config.batch` with one connection pool; `close()` releases it."""

    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config
        self.model = config.model
        self._session: aiohttp.ClientSession | None = None
        self._queries: dict[str, tuple[float, np.ndarray]] = {}
        self.counts = {"calls": 0, "texts": 0, "errors": 0}
        self.last_error: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                connector=aiohttp.TCPConnector(limit=16),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit float32 row per text, in order (shape (0, 0) for no texts)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        size = self.config.batch
        parts = await asyncio.gather(*(self._call(texts[i : i + size]) for i in range(0, len(texts), size)))
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise self._failed(f"answered vectors of different widths {sorted(widths)}")
        return unit_rows(np.concatenate(parts))

    async def embed_query(self, text: str) -> np.ndarray:
        """The vector of a search query, kept QUERY_TTL_S seconds."""
        now = time.monotonic()
        hit = self._queries.get(text)
        if hit is not None and now - hit[0] < QUERY_TTL_S:
            return hit[1]
        [vector] = await self.embed([text])
        if len(self._queries) >= QUERY_CACHE_MAX:
            self._queries.clear()
        self._queries[text] = (now, vector)
        return vector

    def _failed(self, what: str) -> EmbeddingsError:
        self.counts["errors"] += 1
        self.last_error = mask_secrets(f"{mask_url(self.config.url)} {what}")[:300]
        return EmbeddingsError(f"the embeddings upstream {self.last_error}")

    async def _call(self, texts: Sequence[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": list(texts), "encoding_format": "base64"}
        if self.config.dimensions:
            body["dimensions"] = self.config.dimensions
        try:
            async with self._http().post(self.config.url, data=orjson.dumps(body)) as response:
                raw = await response.read()
                if response.status != 200:
                    raise self._failed(f"answered HTTP {response.status}: {_message(raw)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(f"could not be reached: {type(exc).__name__} {exc}".strip()) from None
        self.counts["calls"] += 1
        self.counts["texts"] += len(texts)
        return self._vectors(raw, len(texts))

    def _vectors(self, raw: bytes, expected: int) -> np.ndarray:
        try:
            data = orjson.loads(raw)["data"]
            ordered = sorted(data, key=lambda item: int(item["index"]))
            rows = [_vector(item["embedding"]) for item in ordered]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise self._failed(f"answered no embeddings ({type(exc).__name__}: {exc})") from None
        if len(rows) != expected or len({len(r) for r in rows}) != 1 or not len(rows[0]):
            raise self._failed(f"answered {len(rows)} vectors of uneven or no width for {expected} texts")
        return np.stack(rows)


def _vector(value: Any) -> np.ndarray:
    """One embedding as OpenAI answers it: base64 float32 little-endian, or a list of floats."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    raise TypeError(f"an embedding is base64 or a list, not {type(value).__name__}")


def _message(raw: bytes) -> str:
    """The error message of an upstream's answer, short."""
    try:
        body = orjson.loads(raw)
        error = body.get("error") if isinstance(body, dict) else None
        text = error.get("message") if isinstance(error, dict) else error
        return str(text or body)[:200]
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
