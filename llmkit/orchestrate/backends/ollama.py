"""OllamaBackend: jobs on an Ollama server's /api/chat, as one JSON object or an NDJSON stream."""

from __future__ import annotations

from typing import Any

import aiohttp

from llmkit.core.upstream import (
    SessionFactory,
    UpstreamResponse,
    UpstreamSession,
    in_stream_error,
    iter_lines,
    loads,
    ollama_fields,
)
from llmkit.orchestrate.backends.base import JobSpec, OnDelta, PermanentError, RetryableError, no_model

__all__ = ["OllamaBackend", "ollama_fields"]


class OllamaBackend:
    """POST {base_url}/api/chat with the prompt as one user message."""

    name = "ollama"

    def __init__(
        self,
        base_url: str,
        default_model: str = "",
        *,
        timeout: float = 300.0,
        session: aiohttp.ClientSession | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/api/chat"
        self.default_model = default_model
        self.http = UpstreamSession(
            self.name, timeout=timeout, session=session, session_factory=session_factory
        )

    def body(self, job: JobSpec) -> dict[str, Any]:
        """The request body; `stream` is always sent because Ollama streams when it is left out."""
        model = job.model or self.default_model
        if not model:
            raise no_model(self.name)
        messages = [{"role": "user", "content": job.prompt}]
        return {**ollama_fields(job.parameters), "model": model, "messages": messages, "stream": job.stream}

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        """The assistant's text; a streamed job passes each piece to `on_delta` as it arrives."""
        async with self.http.post(self.url, self.body(job)) as response:
            if job.stream:
                return await self._read_stream(response, on_delta)
            data = self._object(await response.read())
            return self._content(data)

    def _object(self, raw: bytes) -> dict[str, Any]:
        data = loads(self.name, raw)
        if not isinstance(data, dict):
            raise PermanentError(f"{self.name}: the answer is not a JSON object: {str(data)[:200]}")
        if "error" in data:
            raise in_stream_error(self.name, data["error"])
        return data

    def _content(self, data: dict[str, Any]) -> str:
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if content is None and "message" not in data:
            raise PermanentError(f"{self.name}: the answer has no message: {str(data)[:200]}")
        return content if isinstance(content, str) else ""

    async def _read_stream(self, response: UpstreamResponse, on_delta: OnDelta | None) -> str:
        parts: list[str] = []
        async for line in iter_lines(response):
            if not line.strip():
                continue
            data = self._object(line)
            text = self._content(data) if "message" in data else ""
            if text:
                parts.append(text)
                if on_delta is not None:
                    await on_delta(text)
            if data.get("done") is True:
                return "".join(parts)
        # No `"done": true` object: the server or the line gave out halfway.
        raise RetryableError(f"{self.name}: the stream from {self.url} ended before done")

    async def close(self) -> None:
        """Close the HTTP session (if this backend made it)."""
        await self.http.close()
